//! Token verification cost: every WebSocket join and REST call pays it once.

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_signaling::token::{StaffRole, TokenKeys};
use std::hint::black_box;

fn tokens(c: &mut Criterion) {
    let keys = TokenKeys::new(&[7u8; 32], "gatehouse").expect("32-byte key");
    let now = 1_800_000_000;
    let staff = keys
        .mint_staff("olga", "Olga Berg", "clinic", StaffRole::Staff, now, 3600)
        .unwrap();
    let guest = keys
        .mint_guest("p_abc", "m_def", "Grace Hopper", true, now, 3600)
        .unwrap();
    let mut tampered = guest.clone();
    tampered.pop();
    c.bench_function("token/verify_staff", |b| {
        b.iter(|| keys.verify(black_box(&staff), now).unwrap())
    });
    c.bench_function("token/verify_guest_for_meeting", |b| {
        b.iter(|| keys.verify_for_meeting(black_box(&guest), "m_def", now).unwrap())
    });
    c.bench_function("token/reject_tampered", |b| {
        b.iter(|| keys.verify(black_box(&tampered), now).unwrap_err())
    });
    c.bench_function("token/mint_guest", |b| {
        b.iter(|| {
            keys.mint_guest("p_abc", "m_def", black_box("Grace Hopper"), true, now, 3600)
                .unwrap()
        })
    });
}

criterion_group!(benches, tokens);
criterion_main!(benches);
