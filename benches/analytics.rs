//! The appointment analytics report (issue 14): 100 000 appointments in the store, a 90-day
//! department report by day and by week (target under 200 ms; docs/BENCHMARKS.md).
//!
//! Two shapes: a year of appointments over five departments (a 90-day report of one reads
//! about 5 000), and the worst case, all 100 000 in the 90 days of one department.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse::appointments::analytics::{Group, report};
use gatehouse::store::Store;
use jiff::tz::TimeZone;

const N: u64 = 100_000;
const DAY: u64 = 24 * 3600 * 1000;
/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600_000;

/// A store at `path` with `N` appointments spread over `days` days and `departments`
/// departments (written directly, in one transaction, as a busy year would leave them).
fn fill(path: &std::path::Path, days: u64, departments: u64) {
    drop(Store::open(path).expect("store"));
    let mut conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_update(None, "synchronous", "OFF").unwrap();
    // Bare rows: no meetings, links or types behind them (the report reads none of those).
    conn.pragma_update(None, "foreign_keys", "OFF").unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut stmt = tx
            .prepare(
                "INSERT INTO appointments (appointment_id, organization, type_id, department_id, staff, meeting_id, link_id, manage_code, guest_name, guest_contact, starts_at, ends_at, machine, state, created_at, first_arrived_at, served_at, completed_at) VALUES (?1, 'acme', 'at_1', ?2, ?3, ?4, ?5, ?6, 'Guest', NULL, ?7, ?8, '{}', ?9, ?10, ?11, ?12, ?13)",
            )
            .unwrap();
        for i in 0..N {
            let dept = format!("d_{}", i % departments);
            let staff = format!("staff_{}", i % (departments * 8));
            // Spread evenly; one in ten on demand (no start).
            let at = T0 + (i * days * DAY) / N;
            let on_demand = i % 10 == 0;
            let (state, arrived, served, completed) = match i % 20 {
                0..=1 => ("no_show", None, None, None),
                2 => ("cancelled", None, None, None),
                _ => {
                    let arrived = at - 60_000 + (i % 7) * 30_000;
                    let served = arrived + 30_000 + (i % 13) * 20_000;
                    (
                        "completed",
                        Some(arrived),
                        Some(served),
                        Some(served + 20 * 60_000 + (i % 11) * 60_000),
                    )
                }
            };
            stmt.execute(rusqlite::params![
                format!("a_{i}"),
                dept,
                staff,
                format!("m_{i}"),
                format!("l_{i}"),
                format!("c_{i}"),
                (!on_demand).then_some(at as i64),
                (!on_demand).then_some((at + 30 * 60_000) as i64),
                state,
                at as i64,
                arrived.map(|v| v as i64),
                served.map(|v| v as i64),
                completed.map(|v| v as i64),
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
    conn.execute_batch("ANALYZE").unwrap();
}

fn analytics(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("gatehouse-bench-analytics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let oslo = TimeZone::get("Europe/Oslo").unwrap();
    for (name, days, departments) in [("year_5_departments", 365, 5), ("all_in_90_days_1_department", 90, 1)] {
        let path = dir.join(format!("{name}.db"));
        let _ = std::fs::remove_file(&path);
        fill(&path, days, departments);
        let store = Store::open(&path).unwrap();
        let (from, to) = (T0 + 100 * DAY % (days * DAY), T0 + 100 * DAY % (days * DAY) + 90 * DAY);
        let (from, to) = if days <= 90 { (T0, T0 + 90 * DAY) } else { (from, to) };
        let rows = store
            .analytics_facts("acme", Some("d_0"), None, from, to)
            .unwrap()
            .len();
        eprintln!("{name}: a 90-day report of department d_0 reads {rows} appointments");
        for group in [Group::Day, Group::Week] {
            c.bench_function(&format!("analytics/{name}/90_days_by_{group:?}").to_lowercase(), |b| {
                b.iter(|| {
                    let facts = store
                        .analytics_facts("acme", black_box(Some("d_0")), None, from, to)
                        .unwrap();
                    report(&facts, &oslo, group)
                })
            });
        }
        drop(store);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = analytics
}
criterion_main!(benches);
