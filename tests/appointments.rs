//! Virtual appointments against a real gateway: real TLS, real SQLite, real WebSockets.
//! Schema upgrade of an old data directory, booking (public and private types, the .ics,
//! cancel and reschedule by the guest), the race for one slot, the state following the
//! guest and staff through the meeting, and the no-show clock.

mod support;

use std::time::Duration;

use gatehouse_signaling::protocol::{ClientMessage, ServerMessage};
use gatehouse_signaling::token::StaffRole;
use serde_json::{Value, json};
use support::{EVENT_TIMEOUT, TestServer, test_config};

const MIN_MS: u64 = 60_000;

fn now_ms() -> u64 {
    gatehouse::ids::now_ms()
}

/// RFC 3339 in UTC for Unix ms.
fn rfc3339(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64).unwrap().to_string()
}

/// Working all day, every day, in UTC: any future slot is in hours.
fn always_hours() -> Value {
    let day = json!([["00:00", "24:00"]]);
    json!({
        "time_zone": "UTC",
        "weekly": { "mon": day, "tue": day, "wed": day, "thu": day, "fri": day, "sat": day, "sun": day }
    })
}

/// The next whole hour at least two hours ahead (a slot boundary for 30-minute types).
fn slot_ahead(hours: u64) -> u64 {
    let hour = 60 * MIN_MS;
    (now_ms() / hour + 1 + hours) * hour
}

/// A department with `staff` (each working all day), and a 30-minute type for it.
async fn setup(srv: &TestServer, admin: &str, staff: &[&str], type_extra: Value) -> (String, Value) {
    let (status, dept) = srv
        .call(
            "POST",
            "/api/v1/departments",
            Some(admin),
            Some(json!({ "name": "Dermatology" })),
        )
        .await;
    assert_eq!(status, 201, "{dept}");
    let did = dept["department_id"].as_str().unwrap().to_owned();
    for s in staff {
        let (status, body) = srv
            .call(
                "PUT",
                &format!("/api/v1/departments/{did}/staff/{s}"),
                Some(admin),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = srv
            .call(
                "PUT",
                &format!("/api/v1/staff/{s}/working-hours"),
                Some(admin),
                Some(always_hours()),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let mut settings = json!({ "title": "Skin check", "duration_minutes": 30, "department_id": did });
    for (k, v) in type_extra.as_object().unwrap() {
        settings[k] = v.clone();
    }
    let (status, t) = srv
        .call("POST", "/api/v1/appointment-types", Some(admin), Some(settings))
        .await;
    assert_eq!(status, 201, "{t}");
    (did, t)
}

async fn appointment(srv: &TestServer, token: &str, id: &str) -> Value {
    let (status, a) = srv
        .call("GET", &format!("/api/v1/appointments/{id}"), Some(token), None)
        .await;
    assert_eq!(status, 200, "{a}");
    a
}

/// Polls the appointment until it is in `state` (the store writes it with the event).
async fn wait_for_state(srv: &TestServer, token: &str, id: &str, state: &str) -> Value {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let a = appointment(srv, token, id).await;
        if a["state"] == state {
            return a;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {state}; now {a}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn transitions(a: &Value) -> Vec<String> {
    a["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["to"].as_str().unwrap().to_owned())
        .collect()
}

/// Books a slot of the type named `key` as a guest.
async fn book(srv: &TestServer, key: &str, start: u64, name: &str) -> (u16, Value) {
    srv.call(
        "POST",
        &format!("/api/v1/book/types/{key}/appointments"),
        None,
        Some(json!({ "starts_at": rfc3339(start), "display_name": name })),
    )
    .await
}

fn code_of(url: &Value) -> String {
    url.as_str().unwrap().rsplit('/').next().unwrap().to_owned()
}

/// The schema of the release before migrations, verbatim (user_version 1 and 2).
const OLD_V1: &str = r#"
CREATE TABLE IF NOT EXISTS meetings (
    meeting_id   TEXT PRIMARY KEY,
    organization TEXT NOT NULL,
    organizer    TEXT NOT NULL,
    settings     TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    ended_at     INTEGER
);
CREATE TABLE IF NOT EXISTS links (
    link_id     TEXT PRIMARY KEY,
    meeting_id  TEXT NOT NULL REFERENCES meetings(meeting_id),
    code        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    invitee     TEXT,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER,
    redemptions INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS links_by_meeting ON links(meeting_id);
CREATE TABLE IF NOT EXISTS participation_events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    meeting_id     TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    display_name   TEXT NOT NULL,
    kind           TEXT NOT NULL,
    at_ms          INTEGER NOT NULL,
    event          TEXT NOT NULL,
    detail         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_meeting ON participation_events(meeting_id, id);
"#;

const OLD_V2: &str = r#"
CREATE TABLE IF NOT EXISTS open_attendance (
    meeting_id     TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    display_name   TEXT NOT NULL,
    kind           TEXT NOT NULL,
    in_call        INTEGER NOT NULL,
    since_ms       INTEGER NOT NULL,
    PRIMARY KEY (meeting_id, participant_id)
);
"#;

/// Writes a data directory as the previous release left it: its schema at `version`, one
/// meeting with its public link and a participation event.
fn old_data_dir(version: i64) -> std::path::PathBuf {
    let dir = support::temp_dir("old-release");
    let conn = rusqlite::Connection::open(dir.join("gatehouse.db")).unwrap();
    conn.execute_batch(OLD_V1).unwrap();
    if version >= 2 {
        conn.execute_batch(OLD_V2).unwrap();
    }
    conn.pragma_update(None, "user_version", version).unwrap();
    let settings = r#"{"title":"Before the upgrade","lobby_bypass":"everyone","allow_anonymous":true,"public_link_enabled":true,"guests_may_present":false,"chat_enabled":true,"max_participants":50,"lobby_timeout_secs":900,"invited_staff":[],"scheduled_start_ms":null,"scheduled_end_ms":null}"#;
    conn.execute(
        "INSERT INTO meetings VALUES ('m_old', 'default', 'olga', ?1, 1000, NULL)",
        [settings],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO links (link_id, meeting_id, code, kind, created_at) VALUES ('l_old', 'm_old', 'oldcode123', 'public', 1000)",
        [],
    )
    .unwrap();
    conn.execute(
        r#"INSERT INTO participation_events (meeting_id, participant_id, display_name, kind, at_ms, event, detail) VALUES ('m_old', 'p_x', 'Ann', 'guest', 2000, 'link_redeemed', '{"event":"link_redeemed","link_id":"l_old"}')"#,
        [],
    )
    .unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_the_previous_release_upgrades_in_place() {
    for version in [1, 2] {
        let dir = old_data_dir(version);
        let mut srv = TestServer::start_with(test_config(&dir)).await;
        let olga = srv.staff_token("olga", StaffRole::Staff);
        let (status, m) = srv.call("GET", "/api/v1/meetings/m_old", Some(&olga), None).await;
        assert_eq!(status, 200, "v{version}: {m}");
        assert_eq!(m["settings"]["title"], "Before the upgrade");
        assert_eq!(m["public_link"]["code"], "oldcode123");
        let (_, events) = srv
            .call("GET", "/api/v1/meetings/m_old/events", Some(&olga), None)
            .await;
        assert_eq!(events.as_array().unwrap().len(), 1, "v{version}: {events}");
        // The old link still works, and the new tables are there.
        srv.redeem("oldcode123", "Ben").await;
        let admin = srv.staff_token("ada", StaffRole::Admin);
        let (status, _) = srv
            .call(
                "POST",
                "/api/v1/departments",
                Some(&admin),
                Some(json!({ "name": "New" })),
            )
            .await;
        assert_eq!(status, 201);
        srv.stop().await;
        let conn = rusqlite::Connection::open(dir.join("gatehouse.db")).unwrap();
        let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v, gatehouse::store::SCHEMA_VERSION, "v{version}");
        let redeemed: i64 = conn
            .query_row("SELECT redemptions FROM links WHERE link_id = 'l_old'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(redeemed, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_books_gets_an_ics_reschedules_and_cancels_through_their_link() {
    let srv = TestServer::start().await;
    let admin = srv.staff_token("ada", StaffRole::Admin);
    let (_, t) = setup(&srv, &admin, &["olga", "ben"], json!({})).await;
    let type_id = t["type_id"].as_str().unwrap();

    // The organisation's booking page lists it.
    let (status, types) = srv.call("GET", "/api/v1/book/orgs/default/types", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(types[0]["key"], type_id, "{types}");
    assert_eq!(types[0]["duration_minutes"], 30);

    // Free slots over the next day; book one two hours ahead.
    let start = slot_ahead(2);
    let (status, slots) = srv
        .call(
            "GET",
            &format!(
                "/api/v1/book/types/{type_id}/slots?from={}&to={}",
                rfc3339(start),
                rfc3339(start + 24 * 60 * MIN_MS)
            ),
            None,
            None,
        )
        .await;
    assert_eq!(status, 200, "{slots}");
    assert_eq!(slots["slots"].as_array().unwrap().len(), 48, "{slots}");
    assert_eq!(slots["slots"][0]["starts_at_ms"], start);

    let (status, booked) = srv
        .call(
            "POST",
            &format!("/api/v1/book/types/{type_id}/appointments"),
            None,
            Some(
                json!({ "starts_at": rfc3339(start), "display_name": "Grace Hopper", "contact": "grace@example.org" }),
            ),
        )
        .await;
    assert_eq!(status, 201, "{booked}");
    let a = &booked["appointment"];
    assert_eq!(a["state"], "scheduled");
    assert_eq!(a["starts_at_ms"], start);
    assert!(
        a.get("guest_contact").is_none(),
        "the public view hides the contact: {a}"
    );
    let code = booked["manage_code"].as_str().unwrap().to_owned();
    let id = a["appointment_id"].as_str().unwrap().to_owned();
    let join_code = code_of(&booked["join_url"]);

    // The slot is gone for the staff member who took it, not for the other.
    let (_, slots) = srv
        .call(
            "GET",
            &format!(
                "/api/v1/book/types/{type_id}/slots?from={}&to={}",
                rfc3339(start),
                rfc3339(start + 60 * MIN_MS)
            ),
            None,
            None,
        )
        .await;
    assert_eq!(slots["slots"][0]["starts_at_ms"], start, "ben is still free: {slots}");

    // The staff view has the contact and the first transition.
    let staff_view = appointment(&srv, &admin, &id).await;
    assert_eq!(staff_view["guest_contact"], "grace@example.org");
    assert_eq!(transitions(&staff_view), ["scheduled"]);

    // The .ics.
    let resp = srv
        .http
        .get(format!("{}/api/v1/book/appointments/{code}/ics", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/calendar")
    );
    let ics = resp.text().await.unwrap();
    let dtstart = jiff::Timestamp::from_millisecond(start as i64)
        .unwrap()
        .strftime("DTSTART:%Y%m%dT%H%M%SZ")
        .to_string();
    assert!(ics.contains(&dtstart), "{ics}");
    assert!(ics.contains("SUMMARY:Skin check"), "{ics}");

    // Reschedule an hour later through the guest's code.
    let later = start + 60 * MIN_MS;
    let (status, moved) = srv
        .call(
            "POST",
            &format!("/api/v1/book/appointments/{code}/reschedule"),
            None,
            Some(json!({ "starts_at": rfc3339(later) })),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["appointment"]["starts_at_ms"], later);
    // Outside working hours? Never here; into the past: refused.
    let (status, err) = srv
        .call(
            "POST",
            &format!("/api/v1/book/appointments/{code}/reschedule"),
            None,
            Some(json!({ "starts_at": rfc3339(now_ms() - MIN_MS) })),
        )
        .await;
    assert_eq!((status, err["code"].as_str()), (400, Some("bad_request")), "{err}");

    // Cancel: the join link dies with it; a second cancel is a conflict.
    let (status, cancelled) = srv
        .call("POST", &format!("/api/v1/book/appointments/{code}/cancel"), None, None)
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["appointment"]["state"], "cancelled");
    let (status, err) = srv.call("GET", &format!("/api/v1/links/{join_code}"), None, None).await;
    assert_eq!((status, err["code"].as_str()), (410, Some("link_revoked")), "{err}");
    let (status, err) = srv
        .call("POST", &format!("/api/v1/book/appointments/{code}/cancel"), None, None)
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (409, Some("wrong_appointment_state")),
        "{err}"
    );
    let staff_view = appointment(&srv, &admin, &id).await;
    assert_eq!(transitions(&staff_view), ["scheduled", "scheduled", "cancelled"]);
    let causes: Vec<&str> = staff_view["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["cause"].as_str().unwrap())
        .collect();
    assert_eq!(causes, ["booked", "rescheduled", "cancelled_by_guest"]);
    // The freed slot is bookable again.
    let (status, _) = srv
        .call(
            "POST",
            &format!("/api/v1/book/types/{type_id}/appointments"),
            None,
            Some(json!({ "starts_at": rfc3339(later), "display_name": "Ada" })),
        )
        .await;
    assert_eq!(status, 201);

    // Unknown codes and bad input answer with typed errors.
    for (method, path, body, want) in [
        ("GET", "/api/v1/book/appointments/nope".to_owned(), None, 404),
        ("GET", "/api/v1/book/types/nope/slots?from=x&to=y".to_owned(), None, 404),
        (
            "GET",
            format!("/api/v1/book/types/{type_id}/slots?from=2026-01-01T00:00:00Z&to=2026-06-01T00:00:00Z"),
            None,
            400,
        ),
        ("GET", format!("/api/v1/book/types/{type_id}/slots"), None, 400),
        (
            "POST",
            format!("/api/v1/book/types/{type_id}/appointments"),
            Some(json!(["x"])),
            400,
        ),
        (
            "POST",
            format!("/api/v1/book/types/{type_id}/appointments"),
            Some(json!({ "starts_at": "tomorrow", "display_name": "X" })),
            400,
        ),
    ] {
        let (status, err) = srv.call(method, &path, None, body).await;
        assert_eq!(status, want, "{path}: {err}");
        assert!(err["code"].is_string(), "{path}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_bookings_of_one_slot_exactly_one_wins() {
    let srv = TestServer::start().await;
    let admin = srv.staff_token("ada", StaffRole::Admin);
    let (_, t) = setup(&srv, &admin, &["olga"], json!({})).await;
    let type_id = t["type_id"].as_str().unwrap().to_owned();
    let start = slot_ahead(3);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (http, base, type_id) = (srv.http.clone(), srv.base.clone(), type_id.clone());
            tokio::spawn(async move {
                support::http_call(
                    &http,
                    &base,
                    "POST",
                    &format!("/api/v1/book/types/{type_id}/appointments"),
                    None,
                    Some(json!({ "starts_at": rfc3339(start), "display_name": format!("Guest {i}") })),
                )
                .await
            })
        })
        .collect();
    let mut won = 0;
    let mut taken = 0;
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            201 => won += 1,
            409 if body["code"] == "slot_taken" => taken += 1,
            _ => panic!("unexpected answer {status}: {body}"),
        }
    }
    assert_eq!((won, taken), (1, 49));
    let (_, day) = srv
        .call(
            "GET",
            &format!("/api/v1/appointments?date={}", &rfc3339(start)[..10]),
            Some(&admin),
            None,
        )
        .await;
    let at_start = day["appointments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["starts_at_ms"] == start)
        .count();
    assert_eq!(at_start, 1, "{day}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_types_are_reached_by_their_link_only_and_single_use_links_book_once() {
    let srv = TestServer::start().await;
    let admin = srv.staff_token("ada", StaffRole::Admin);
    let (_, t) = setup(
        &srv,
        &admin,
        &["olga"],
        json!({ "public": false, "single_use_link": true }),
    )
    .await;
    let type_id = t["type_id"].as_str().unwrap();
    let link = &t["private_link"];
    // 90 days by default.
    let ttl = link["expires_at_ms"].as_u64().unwrap() - t["created_at_ms"].as_u64().unwrap();
    assert_eq!(ttl, 90 * 24 * 3600 * 1000);
    let code = link["code"].as_str().unwrap();
    assert!(t["private_url"].as_str().unwrap().ends_with(code));

    let (_, types) = srv.call("GET", "/api/v1/book/orgs/default/types", None, None).await;
    assert_eq!(types, json!([]), "a private type is not listed");
    let (status, _) = srv
        .call("GET", &format!("/api/v1/book/types/{type_id}"), None, None)
        .await;
    assert_eq!(status, 404, "nor reachable by its id");
    let (status, info) = srv.call("GET", &format!("/api/v1/book/types/{code}"), None, None).await;
    assert_eq!((status, info["title"].as_str()), (200, Some("Skin check")));

    let (status, body) = book(&srv, code, slot_ahead(2), "Grace").await;
    assert_eq!(status, 201, "{body}");
    let (status, err) = book(&srv, code, slot_ahead(4), "Mallory").await;
    assert_eq!((status, err["code"].as_str()), (410, Some("link_used")), "{err}");
    let (status, err) = srv
        .call(
            "GET",
            &format!("/api/v1/book/types/{code}/slots?from=a&to=b"),
            None,
            None,
        )
        .await;
    assert_eq!((status, err["code"].as_str()), (410, Some("link_used")), "{err}");

    // A new private link works again; the old code is gone.
    let (status, t2) = srv
        .call(
            "POST",
            &format!("/api/v1/appointment-types/{type_id}/private-link"),
            Some(&admin),
            Some(json!({ "expires_in_days": 7 })),
        )
        .await;
    assert_eq!(status, 201, "{t2}");
    let new_code = t2["private_link"]["code"].as_str().unwrap();
    let (status, _) = srv.call("GET", &format!("/api/v1/book/types/{code}"), None, None).await;
    assert_eq!(status, 404);
    let (status, _) = srv
        .call("GET", &format!("/api/v1/book/types/{new_code}"), None, None)
        .await;
    assert_eq!(status, 200);

    // Only admins manage types; staff of another organisation see nothing.
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let (status, err) = srv
        .call(
            "POST",
            "/api/v1/appointment-types",
            Some(&olga),
            Some(json!({ "title": "X", "staff": ["olga"] })),
        )
        .await;
    assert_eq!((status, err["code"].as_str()), (403, Some("forbidden")));
    let outsider = srv.staff_token_in("eve", "other", StaffRole::Admin);
    let (status, _) = srv
        .call(
            "GET",
            &format!("/api/v1/appointment-types/{type_id}"),
            Some(&outsider),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_follows_the_guest_and_staff_through_the_meeting_and_survives_a_restart() {
    let mut srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Admin);
    let (_, t) = setup(&srv, &olga, &["olga"], json!({})).await;
    let start = slot_ahead(1);
    let (status, a) = srv
        .call(
            "POST",
            "/api/v1/appointments",
            Some(&olga),
            Some(json!({ "type_id": t["type_id"], "starts_at": rfc3339(start), "guest_name": "Grace" })),
        )
        .await;
    assert_eq!(status, 201, "{a}");
    assert_eq!(a["staff"], "olga");
    let id = a["appointment_id"].as_str().unwrap().to_owned();
    let meeting_id = a["meeting_id"].as_str().unwrap().to_owned();

    // The guest opens the link and waits in the lobby.
    let guest_token = srv.redeem(&code_of(&a["join_url"]), "Grace").await;
    let mut guest = srv.join(&guest_token, None).await;
    guest
        .expect("lobby", |m| matches!(m, ServerMessage::Lobby { .. }))
        .await;
    wait_for_state(&srv, &olga, &id, "waiting").await;

    // Today's queue shows the guest waiting.
    let (_, day) = srv
        .call(
            "GET",
            &format!("/api/v1/appointments?date={}", &rfc3339(start)[..10]),
            Some(&olga),
            None,
        )
        .await;
    let mine = day["appointments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["appointment_id"] == id.as_str())
        .unwrap_or_else(|| panic!("in the queue: {day}"));
    assert_eq!(mine["state"], "waiting");
    assert!(mine["lobby_wait_ms"].as_u64().is_some());

    // Staff join and admit: in progress.
    let mut staff = srv.join(&olga, Some(&meeting_id)).await;
    let lobby = staff
        .expect(
            "the lobby list",
            |m| matches!(m, ServerMessage::LobbyUpdate { entries } if !entries.is_empty()),
        )
        .await;
    let ServerMessage::LobbyUpdate { entries } = lobby else {
        unreachable!()
    };
    staff
        .send(&ClientMessage::Admit {
            participant_id: entries[0].participant_id.clone(),
        })
        .await;
    guest
        .expect("admitted", |m| matches!(m, ServerMessage::Admitted { .. }))
        .await;
    wait_for_state(&srv, &olga, &id, "in_progress").await;

    // Cancelling a running appointment is refused.
    let (status, err) = srv
        .call("POST", &format!("/api/v1/appointments/{id}/cancel"), Some(&olga), None)
        .await;
    assert_eq!((status, err["code"].as_str()), (409, Some("wrong_appointment_state")));

    // The guest leaves: completed, with its lobby wait.
    guest.send(&ClientMessage::Leave).await;
    guest.until_closed().await;
    let done = wait_for_state(&srv, &olga, &id, "completed").await;
    assert_eq!(transitions(&done), ["scheduled", "waiting", "in_progress", "completed"]);
    assert!(done["lobby_wait_ms"].as_u64().is_some());
    staff.send(&ClientMessage::Leave).await;
    staff.until_closed().await;

    // Analytics, live: one completed appointment that day, its lobby wait (lobby to
    // admission, from the transitions' times) and its duration (admission to the guest leaving).
    let at = |to: &str| {
        done["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["to"] == to)
            .unwrap()["at_ms"]
            .as_u64()
            .unwrap()
    };
    let (waited, served) = (at("in_progress") - at("waiting"), at("completed") - at("in_progress"));
    let day = &rfc3339(start)[..10];
    let (status, report) = srv
        .call(
            "GET",
            &format!("/api/v1/analytics/appointments?from={day}&to={day}"),
            Some(&olga),
            None,
        )
        .await;
    assert_eq!(status, 200, "{report}");
    let total = &report["total"];
    assert_eq!(
        (total["appointments"].as_u64(), total["completed"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    assert_eq!(
        (total["no_shows"].as_u64(), total["no_show_rate"].as_f64()),
        (Some(0), Some(0.0))
    );
    assert_eq!(total["lobby_wait_avg_ms"].as_u64(), Some(waited), "{report}");
    assert_eq!(total["lobby_wait_p90_ms"].as_u64(), Some(waited));
    assert_eq!(total["duration_avg_ms"].as_u64(), Some(served), "{report}");
    assert_eq!(report["periods"][0]["period"], day);
    assert_eq!(report["periods"].as_array().unwrap().len(), 1);
    // The same as CSV, by Accept or by ?format=csv.
    let resp = srv
        .http
        .get(format!(
            "{}/api/v1/analytics/appointments?from={day}&to={day}&group=week",
            srv.base
        ))
        .bearer_auth(&olga)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let text = resp.text().await.unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert!(
        rows[1].contains("-W") && rows[1].split(',').nth(4) == Some("1"),
        "{text}"
    );
    assert!(
        rows[2].starts_with(&format!("total,1,1,0,1,0,0,0.0000,{served},{served},{waited},{waited}")),
        "{text}"
    );
    let (_, csv) = srv
        .call(
            "GET",
            &format!("/api/v1/analytics/appointments?from={day}&to={day}&format=csv"),
            Some(&olga),
            None,
        )
        .await;
    assert!(csv.as_str().unwrap().starts_with("period,appointments,"), "{csv}");
    // Staff see their own and their departments'; not another department, not bad ranges.
    let ben = srv.staff_token("ben", StaffRole::Staff);
    let (_, own) = srv
        .call(
            "GET",
            &format!("/api/v1/analytics/appointments?from={day}&to={day}"),
            Some(&ben),
            None,
        )
        .await;
    assert_eq!(
        (own["staff"].as_str(), own["total"]["appointments"].as_u64()),
        (Some("ben"), Some(0)),
        "{own}"
    );
    let did = t["department_id"].as_str().unwrap();
    for (query, want) in [
        (format!("department_id={did}"), 403),
        ("staff=olga".to_owned(), 403),
        ("from=2026-01-02&to=2026-01-01".to_owned(), 400),
        ("from=2024-01-01&to=2026-01-01".to_owned(), 400),
        ("group=month".to_owned(), 400),
        ("tz=Mars/Base".to_owned(), 400),
    ] {
        let (status, body) = srv
            .call(
                "GET",
                &format!("/api/v1/analytics/appointments?{query}"),
                Some(&ben),
                None,
            )
            .await;
        assert_eq!(status, want, "{query}: {body}");
    }

    // Durable: after a restart on the same data directory, the same state and history.
    srv.stop().await;
    let mut again = TestServer::start_with(test_config(&srv.data_dir)).await;
    let olga = again.staff_token("olga", StaffRole::Admin);
    let after = appointment(&again, &olga, &id).await;
    assert_eq!(after["state"], "completed");
    assert_eq!(after["transitions"], done["transitions"]);
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_marks_an_absent_guest_no_show_at_the_deadline() {
    let mut srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Admin);
    let (_, t) = setup(&srv, &olga, &["olga"], json!({ "no_show_minutes": 10 })).await;
    // Staff may enter an appointment that began 12 minutes ago (a walk-in written down late).
    let start = now_ms() - 12 * MIN_MS;
    let (status, a) = srv
        .call(
            "POST",
            "/api/v1/appointments",
            Some(&olga),
            Some(json!({ "type_id": t["type_id"], "starts_at": rfc3339(start), "guest_name": "Absent" })),
        )
        .await;
    assert_eq!(status, 201, "{a}");
    let id = a["appointment_id"].as_str().unwrap();
    let marked = wait_for_state(&srv, &olga, id, "no_show").await;
    // The deadline (start + 10 min) passed before the appointment existed: the mark is
    // stamped at its creation, never before it (the pure tests check the exact deadline),
    // and not when the clock noticed.
    let created = marked["transitions"][0]["at_ms"].as_u64().unwrap();
    assert!(created > start + 10 * MIN_MS);
    assert_eq!(marked["no_show_at_ms"], created);
    let last = marked["transitions"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["to"].as_str(), last["cause"].as_str()),
        (Some("no_show"), Some("clock"))
    );
    // The analytics count it: one no-show of one scheduled appointment, for its department.
    let day = &rfc3339(start)[..10];
    let did = t["department_id"].as_str().unwrap();
    let (status, report) = srv
        .call(
            "GET",
            &format!("/api/v1/analytics/appointments?from={day}&to={day}&department_id={did}"),
            Some(&olga),
            None,
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (
            report["total"]["no_shows"].as_u64(),
            report["total"]["no_show_rate"].as_f64()
        ),
        (Some(1), Some(1.0)),
        "{report}"
    );
    // A no-show cannot be cancelled, but can be rescheduled.
    let (status, _) = srv
        .call("POST", &format!("/api/v1/appointments/{id}/cancel"), Some(&olga), None)
        .await;
    assert_eq!(status, 409);
    let (status, moved) = srv
        .call(
            "POST",
            &format!("/api/v1/appointments/{id}/reschedule"),
            Some(&olga),
            Some(json!({ "starts_at": rfc3339(slot_ahead(5)) })),
        )
        .await;
    assert_eq!((status, moved["state"].as_str()), (200, Some("scheduled")), "{moved}");
    srv.stop().await;
}

// ---- webhooks ----

/// One request a [`Receiver`] got, and what it answered.
#[derive(Debug, Clone)]
struct Hit {
    key: String,
    attempt: u32,
    timestamp: String,
    signature: String,
    body: Value,
    raw: Vec<u8>,
    answered: u16,
}

/// A real HTTP receiver on loopback that records every request. It answers 503 while
/// `down`, else 500 to the next `fail_next` requests, else 200.
struct Receiver {
    url: String,
    hits: std::sync::Arc<std::sync::Mutex<Vec<Hit>>>,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    changed: tokio::sync::watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(fail_next: usize, down: bool) -> Receiver {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let down = Arc::new(AtomicBool::new(down));
        let fail = Arc::new(AtomicUsize::new(fail_next));
        let (tx, changed) = tokio::sync::watch::channel(0usize);
        let tx = Arc::new(tx);
        let handler = {
            let (hits, down) = (hits.clone(), down.clone());
            move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
                let (hits, down, fail, tx) = (hits.clone(), down.clone(), fail.clone(), tx.clone());
                async move {
                    let answered = if down.load(Ordering::SeqCst) {
                        503
                    } else if fail
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        500
                    } else {
                        200
                    };
                    let h = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    let hit = Hit {
                        key: h("idempotency-key"),
                        attempt: h("gatehouse-delivery-attempt").parse().unwrap_or(0),
                        timestamp: h("gatehouse-timestamp"),
                        signature: h("gatehouse-signature"),
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                        raw: body.to_vec(),
                        answered,
                    };
                    let n = {
                        let mut hits = hits.lock().unwrap();
                        hits.push(hit);
                        hits.len()
                    };
                    tx.send_replace(n);
                    axum::http::StatusCode::from_u16(answered).unwrap()
                }
            }
        };
        let app = axum::Router::new().route("/hook", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            url,
            hits,
            down,
            changed,
            task,
        }
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Waits (on each request, never by sleeping) until `f` of the hits so far says yes.
    async fn wait_for<T>(&self, what: &str, within: Duration, f: impl Fn(&[Hit]) -> Option<T>) -> T {
        let mut changed = self.changed.clone();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(t) = f(&self.hits()) {
                return t;
            }
            if tokio::time::timeout_at(deadline, changed.changed()).await.is_err() {
                panic!(
                    "timed out waiting for {what}; got {:#?}",
                    self.hits()
                        .iter()
                        .map(|h| (&h.body["type"], h.answered))
                        .collect::<Vec<_>>()
                );
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const HOOK_SECRET: &str = "whsec-0123456789abcdef";

/// A webhooks file for `endpoints` (name, url), with retry timings short enough for tests.
fn webhooks_file(dir: &std::path::Path, endpoints: &[(&str, &str)]) -> std::path::PathBuf {
    let mut text = String::new();
    for (name, url) in endpoints {
        text += &format!("[[endpoint]]\nname = \"{name}\"\nurl = \"{url}\"\nsecret = \"{HOOK_SECRET}\"\n\n");
    }
    text += "[retry]\nbase_ms = 50\nmax_ms = 400\ntimeout_ms = 500\npoll_ms = 20\n";
    let path = dir.join("webhooks.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Checks a hit as a receiver should: the signature over "{timestamp}.{body}", fresh.
fn assert_signed(hit: &Hit) {
    let now = now_ms() / 1000;
    gatehouse::webhooks::verify(
        HOOK_SECRET.as_bytes(),
        &hit.timestamp,
        &hit.signature,
        &hit.raw,
        now,
        gatehouse::webhooks::DEFAULT_TOLERANCE,
    )
    .unwrap_or_else(|e| panic!("{e}: {hit:?}"));
    // The same by hand, as a receiver in another language would.
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{}.", hit.timestamp).as_bytes());
    mac.update(&hit.raw);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hit.signature, format!("v1={hex}"));
    assert!(
        gatehouse::webhooks::verify(
            b"not-the-secret-at-all",
            &hit.timestamp,
            &hit.signature,
            &hit.raw,
            now,
            gatehouse::webhooks::DEFAULT_TOLERANCE
        )
        .is_err()
    );
}

fn of_type<'a>(hits: &'a [Hit], event_type: &str) -> Vec<&'a Hit> {
    hits.iter().filter(|h| h.body["type"] == event_type).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_after_500s_and_delivered_once_more_and_a_dead_endpoint_blocks_nothing() {
    // Three 500s, then 200s.
    let receiver = Receiver::start(3, false).await;
    // An endpoint that takes the connection and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}/hook", silent.local_addr().unwrap());
    let dir = support::temp_dir("webhooks");
    let mut config = test_config(&dir);
    config.webhooks_file = Some(webhooks_file(&dir, &[("silent", &silent_url), ("crm", &receiver.url)]));
    let mut srv = TestServer::start_with(config).await;
    let olga = srv.staff_token("olga", StaffRole::Admin);
    let (_, t) = setup(&srv, &olga, &["olga"], json!({ "reminders": ["1h", "1d"] })).await;
    assert_eq!(t["reminders"], json!(["1d", "1h"]), "{t}");
    // The 1 h reminder falls due 2 s from now; the 1 d one had passed at booking: not sent.
    let start = now_ms() + 60 * MIN_MS + 2_000;
    let (status, a) = srv
        .call(
            "POST",
            "/api/v1/appointments",
            Some(&olga),
            Some(json!({ "type_id": t["type_id"], "starts_at": rfc3339(start), "guest_name": "Ada", "guest_contact": "ada@example.org" })),
        )
        .await;
    assert_eq!(status, 201, "{a}");
    let id = a["appointment_id"].as_str().unwrap().to_owned();

    // The booked event: three failures, then delivered, each attempt with the same key.
    let booked = receiver
        .wait_for("the booked event delivered", EVENT_TIMEOUT, |hits| {
            let b = of_type(hits, "appointment.booked");
            b.iter()
                .any(|h| h.answered == 200)
                .then(|| b.into_iter().cloned().collect::<Vec<_>>())
        })
        .await;
    assert_eq!(
        booked.iter().map(|h| h.answered).collect::<Vec<_>>(),
        [500, 500, 500, 200]
    );
    assert_eq!(booked.iter().map(|h| h.attempt).collect::<Vec<_>>(), [1, 2, 3, 4]);
    let key = booked[0].key.clone();
    assert!(key.starts_with("evt_"), "{key}");
    assert!(booked.iter().all(|h| h.key == key && h.body["id"] == key.as_str()));
    for h in &booked {
        assert_signed(h);
    }
    let data = &booked[3].body["data"];
    assert_eq!(data["appointment_id"], id.as_str());
    assert_eq!(
        (data["guest_name"].as_str(), data["guest_contact"].as_str()),
        (Some("Ada"), Some("ada@example.org"))
    );
    assert_eq!(
        (data["title"].as_str(), data["state"].as_str()),
        (Some("Skin check"), Some("scheduled"))
    );
    assert_eq!(data["join_url"], a["join_url"]);
    assert_eq!(booked[3].body["organization"], "default");

    // The reminder, produced by the clock, carries the join link.
    let reminder = receiver
        .wait_for("the 1 h reminder", Duration::from_secs(20), |hits| {
            of_type(hits, "appointment.reminder").first().map(|h| (*h).clone())
        })
        .await;
    assert_signed(&reminder);
    assert_eq!(reminder.body["data"]["reminder"], "1h");
    assert_eq!(reminder.body["data"]["join_url"], a["join_url"]);
    assert_eq!(reminder.body["data"]["starts_at_ms"], start);

    // Staff send one more now (the queue's "Send reminder"): to both endpoints, with the link.
    let (status, sent) = srv
        .call("POST", &format!("/api/v1/appointments/{id}/remind"), Some(&olga), None)
        .await;
    assert_eq!((status, sent["endpoints"].as_u64()), (202, Some(2)), "{sent}");
    let manual_key = sent["event_id"].as_str().unwrap().to_owned();
    let manual = receiver
        .wait_for("the manual reminder", EVENT_TIMEOUT, |hits| {
            hits.iter().find(|h| h.key == manual_key && h.answered == 200).cloned()
        })
        .await;
    assert_signed(&manual);
    assert_eq!(
        (manual.body["type"].as_str(), manual.body["data"]["reminder"].as_str()),
        (Some("appointment.reminder"), Some("manual")),
        "{:?}",
        manual.body
    );
    assert_eq!(manual.body["data"]["join_url"], a["join_url"]);

    // Staff cancel: the event says so, without the revoked link.
    let (status, _) = srv
        .call("POST", &format!("/api/v1/appointments/{id}/cancel"), Some(&olga), None)
        .await;
    assert_eq!(status, 200);
    let cancelled = receiver
        .wait_for("the cancelled event", EVENT_TIMEOUT, |hits| {
            of_type(hits, "appointment.cancelled").first().map(|h| (*h).clone())
        })
        .await;
    assert_eq!(cancelled.body["data"]["cause"], "cancelled_by_staff");
    assert!(cancelled.body["data"].get("join_url").is_none(), "{:?}", cancelled.body);
    let (status, err) = srv
        .call("POST", &format!("/api/v1/appointments/{id}/remind"), Some(&olga), None)
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (409, Some("wrong_appointment_state")),
        "{err}"
    );

    // Exactly once more after recovery: one 200 for the booked event, and the store
    // holds it delivered after 4 attempts; every event got one 200; the 1 d reminder
    // was never sent. The silent endpoint, timing out on every attempt meanwhile, held
    // up none of it.
    let hits = receiver.hits();
    assert_eq!(hits.iter().filter(|h| h.key == key && h.answered == 200).count(), 1);
    let delivered: Vec<&str> = hits
        .iter()
        .filter(|h| h.answered == 200)
        .map(|h| h.key.as_str())
        .collect();
    let mut unique = delivered.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        delivered.len(),
        "each event delivered once: {delivered:?}"
    );
    assert_eq!(
        of_type(&hits, "appointment.reminder")
            .iter()
            .filter(|h| h.answered == 200)
            .count(),
        2,
        "the clock's 1 h reminder and the manual one"
    );
    let (status, deliveries) = srv.call("GET", "/api/v1/webhooks/deliveries", Some(&olga), None).await;
    assert_eq!(status, 200, "{deliveries}");
    let find = |endpoint: &str, event: &str| {
        deliveries
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["endpoint"] == endpoint && d["event_id"] == event)
            .cloned()
            .unwrap_or_else(|| panic!("no {endpoint} delivery of {event}: {deliveries}"))
    };
    let crm = find("crm", &key);
    assert_eq!(
        (crm["status"].as_str(), crm["attempts"].as_u64()),
        (Some("delivered"), Some(4)),
        "{crm}"
    );
    let dead = find("silent", &key);
    assert_eq!(dead["status"], "pending", "{dead}");
    assert!(dead["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{dead}");
    let staff = srv.staff_token("ben", StaffRole::Staff);
    let (status, _) = srv.call("GET", "/api/v1/webhooks/deliveries", Some(&staff), None).await;
    assert_eq!(status, 403, "admins only");
    srv.stop().await;
    drop(silent);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `gatehouse serve` as a child process with a webhooks file; killed with its tree on drop.
struct GatewayProcess {
    tree: support::process::ProcessTree,
    base: String,
    http: reqwest::Client,
}

impl GatewayProcess {
    fn start(dir: &std::path::Path, webhooks: &std::path::Path) -> GatewayProcess {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"));
        cmd.args(["serve", "--data-dir"])
            .arg(dir)
            .args(["--listen", "127.0.0.1:0", "--media-bind", "127.0.0.1:0"])
            .args([
                "--media-tcp-bind",
                "127.0.0.1:0",
                "--media-shards",
                "1",
                "--webhooks-file",
            ])
            .arg(webhooks)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut tree = support::process::ProcessTree::spawn(cmd).expect("gatehouse serve starts");
        let stderr = tree.child_mut().stderr.take().expect("piped");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("gateway.log"))
            .unwrap();
        let banner =
            support::process::first_line_with(stderr, log, "Gatehouse is listening on", Duration::from_secs(60))
                .unwrap_or_else(|| panic!("no banner; log in {}", dir.join("gateway.log").display()));
        let marker = "listening on https://";
        let rest = &banner[banner.find(marker).unwrap() + marker.len()..];
        let listen = rest.split([' ', ',']).next().unwrap();
        let port = listen.rsplit(':').next().unwrap();
        gatehouse::tls::install_crypto_provider();
        let ca = std::fs::read(dir.join("tls/ca.pem")).unwrap();
        GatewayProcess {
            tree,
            base: format!("https://localhost:{port}"),
            http: support::https_client(&ca),
        }
    }

    async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        support::http_call(&self.http, &self.base, method, path, token, body).await
    }

    /// `kill -9`, returning once it is gone.
    fn kill(mut self) {
        let killed = self.tree.end();
        assert!(killed.iter().any(|p| p.comm == "gatehouse"), "{killed:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_undelivered_webhook_events_then_restart_delivers_every_one() {
    let receiver = Receiver::start(0, true).await;
    let dir = support::temp_dir("webhooks-kill");
    let file = webhooks_file(&dir, &[("crm", &receiver.url)]);
    let keys = gatehouse::server::load_or_create_signing_key(&dir).unwrap();
    let now = now_ms() / 1000;
    let olga = keys
        .mint_staff("olga", "Olga", "default", StaffRole::Admin, now, 3600)
        .unwrap();
    let gw = GatewayProcess::start(&dir, &file);
    let (status, t) = gw
        .call(
            "POST",
            "/api/v1/appointment-types",
            Some(&olga),
            Some(json!({ "title": "Advice", "duration_minutes": 30, "staff": ["olga"] })),
        )
        .await;
    assert_eq!(status, 201, "{t}");
    // Three bookings and a cancellation while the receiver is down: four events, each
    // committed with its change before the REST call answered.
    let mut ids = Vec::new();
    for i in 0..3u64 {
        let (status, a) = gw
            .call(
                "POST",
                "/api/v1/appointments",
                Some(&olga),
                Some(json!({ "type_id": t["type_id"], "starts_at": rfc3339(slot_ahead(2 + i)), "guest_name": format!("Guest {i}") })),
            )
            .await;
        assert_eq!(status, 201, "{a}");
        ids.push(a["appointment_id"].as_str().unwrap().to_owned());
    }
    let (status, _) = gw
        .call(
            "POST",
            &format!("/api/v1/appointments/{}/cancel", ids[0]),
            Some(&olga),
            None,
        )
        .await;
    assert_eq!(status, 200);
    // At least one attempt was refused (the worker runs), then kill -9.
    receiver
        .wait_for("a refused attempt", EVENT_TIMEOUT, |hits| {
            hits.iter().any(|h| h.answered == 503).then_some(())
        })
        .await;
    gw.kill();
    let refused_before = receiver.hits().len();

    // The receiver recovers; a new gateway on the same data directory sends everything.
    receiver.down.store(false, std::sync::atomic::Ordering::SeqCst);
    let gw = GatewayProcess::start(&dir, &file);
    let want: Vec<(String, String)> = ids
        .iter()
        .map(|id| ("appointment.booked".to_owned(), id.clone()))
        .chain([("appointment.cancelled".to_owned(), ids[0].clone())])
        .collect();
    let delivered = receiver
        .wait_for(
            "every event delivered after the restart",
            Duration::from_secs(20),
            |hits| {
                let ok: Vec<(String, String)> = hits
                    .iter()
                    .filter(|h| h.answered == 200)
                    .map(|h| {
                        (
                            h.body["type"].as_str().unwrap_or_default().to_owned(),
                            h.body["data"]["appointment_id"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect();
                want.iter().all(|w| ok.contains(w)).then_some(ok)
            },
        )
        .await;
    assert_eq!(delivered.len(), want.len(), "each once: {delivered:?}");
    assert!(refused_before >= 1);
    for h in receiver.hits().iter().filter(|h| h.answered == 200) {
        assert_signed(h);
        // Every key delivered had been written before the kill: a 503'd attempt (if one
        // was made before the kill) carried the same key.
        assert!(h.key.starts_with("evt_"));
    }
    gw.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `subscribe_queue` with `token` (and a department), on a fresh socket.
async fn subscribe_queue(srv: &TestServer, token: &str, department_id: Option<&str>) -> support::Ws {
    let mut ws = srv.ws().await;
    ws.send(&ClientMessage::SubscribeQueue {
        protocol: 1,
        token: token.into(),
        department_id: department_id.map(Into::into),
        tz: None,
    })
    .await;
    ws
}

/// The next `queue_appointment` of `id` in `state`, skipping others.
async fn pushed_state(sub: &mut support::Ws, id: &str, state: &str) -> Vec<String> {
    let m = sub
        .expect(&format!("queue_appointment {state}"), |m| {
            matches!(m, ServerMessage::QueueAppointment { appointment, .. }
                if appointment.appointment_id == id && appointment.state.as_str() == state)
        })
        .await;
    let ServerMessage::QueueAppointment { transitions, .. } = m else {
        unreachable!()
    };
    transitions.iter().map(|t| t.to.as_str().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_queue_subscribers_get_a_snapshot_then_every_change_pushed_and_guests_their_place() {
    let srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Admin);
    let ivan = srv.staff_token("ivan", StaffRole::Staff);
    let (did, t) = setup(&srv, &olga, &["olga"], json!({})).await;
    let create = |name: &'static str| {
        let body = json!({ "type_id": t["type_id"], "on_demand": true, "guest_name": name });
        let olga = olga.clone();
        let srv = &srv;
        async move {
            let (status, a) = srv.call("POST", "/api/v1/appointments", Some(&olga), Some(body)).await;
            assert_eq!(status, 201, "{a}");
            a
        }
    };
    let a = create("Grace").await;
    let id = a["appointment_id"].as_str().unwrap().to_owned();
    let meeting_id = a["meeting_id"].as_str().unwrap().to_owned();

    // A guest token cannot subscribe; nor can staff to a department they are not in.
    let guest_token = srv.redeem(&code_of(&a["join_url"]), "Grace").await;
    let mut refused = subscribe_queue(&srv, &guest_token, None).await;
    assert_eq!(refused.expect_error().await, gatehouse_signaling::ErrorCode::Forbidden);
    assert!(refused.next().await.is_none(), "the socket closes after the refusal");
    let mut refused = subscribe_queue(&srv, &ivan, Some(&did)).await;
    assert_eq!(refused.expect_error().await, gatehouse_signaling::ErrorCode::Forbidden);

    // Staff: the snapshot first, with today's appointment, nobody live yet.
    let mut sub = subscribe_queue(&srv, &olga, Some(&did)).await;
    let ServerMessage::QueueSnapshot {
        meetings, appointments, ..
    } = sub.next().await.expect("the snapshot")
    else {
        panic!("the first frame is the snapshot");
    };
    assert!(meetings.is_empty(), "{meetings:?}");
    assert_eq!(appointments.len(), 1, "{appointments:?}");
    assert_eq!(
        (appointments[0].appointment_id.as_str(), appointments[0].state.as_str()),
        (id.as_str(), "scheduled")
    );
    // Ivan, not in the department, subscribes to his own queue: he sees none of it.
    let mut ivan_sub = subscribe_queue(&srv, &ivan, None).await;
    assert!(matches!(
        ivan_sub.next().await,
        Some(ServerMessage::QueueSnapshot { ref meetings, ref appointments, .. }) if meetings.is_empty() && appointments.is_empty()
    ));
    // A subscription takes only ping.
    sub.send(&ClientMessage::Ping { nonce: 7 }).await;
    sub.expect("pong", |m| matches!(m, ServerMessage::Pong { nonce: 7 }))
        .await;

    // The guest starts waiting: pushed, the state with its transition and the lobby.
    let mut guest = srv.join(&guest_token, None).await;
    guest
        .expect("lobby", |m| matches!(m, ServerMessage::Lobby { .. }))
        .await;
    assert_eq!(pushed_state(&mut sub, &id, "waiting").await, ["waiting"]);
    let lobby = sub
        .expect("the meeting's lobby", |m| {
            matches!(m, ServerMessage::QueueMeeting { meeting: Some(q), .. } if q.meeting_id == meeting_id && q.lobby.len() == 1)
        })
        .await;
    let ServerMessage::QueueMeeting { meeting: Some(q), .. } = lobby else {
        unreachable!()
    };
    // The guest hears their place: first, and no estimate without completed appointments.
    guest
        .expect("place 1", |m| {
            matches!(
                m,
                ServerMessage::QueuePosition {
                    position: 1,
                    estimated_wait_secs: None
                }
            )
        })
        .await;

    // A second guest of the department waits behind the first.
    let b = create("Henry").await;
    let b_id = b["appointment_id"].as_str().unwrap().to_owned();
    assert_eq!(
        pushed_state(&mut sub, &b_id, "scheduled").await,
        ["scheduled"],
        "a booking is pushed"
    );
    let henry_token = srv.redeem(&code_of(&b["join_url"]), "Henry").await;
    let mut henry = srv.join(&henry_token, None).await;
    henry
        .expect("place 2", |m| {
            matches!(m, ServerMessage::QueuePosition { position: 2, .. })
        })
        .await;

    // Admitted from the queue: in progress, the lobby empty, the call one.
    let (status, body) = srv
        .call(
            "POST",
            &format!(
                "/api/v1/meetings/{meeting_id}/lobby/{}/admit",
                q.lobby[0].participant_id
            ),
            Some(&olga),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    sub.expect("the call, the lobby empty", |m| {
        matches!(m, ServerMessage::QueueMeeting { meeting: Some(q), .. } if q.meeting_id == meeting_id && q.lobby.is_empty() && q.in_call == 1)
    })
    .await;
    // Alone in the call the guest still waits; staff join: in progress.
    let mut staff = srv.join(&olga, Some(&meeting_id)).await;
    assert_eq!(pushed_state(&mut sub, &id, "in_progress").await, ["in_progress"]);
    sub.expect("two in the call", |m| {
        matches!(m, ServerMessage::QueueMeeting { meeting: Some(q), .. } if q.meeting_id == meeting_id && q.in_call == 2)
    })
    .await;
    // Henry moves up.
    henry
        .expect("place 1", |m| {
            matches!(m, ServerMessage::QueuePosition { position: 1, .. })
        })
        .await;

    // Henry leaves the lobby and his appointment is cancelled: both pushed.
    henry.send(&ClientMessage::Leave).await;
    henry.until_closed().await;
    assert_eq!(pushed_state(&mut sub, &b_id, "scheduled").await, ["scheduled"]);
    let (status, body) = srv
        .call(
            "POST",
            &format!("/api/v1/appointments/{b_id}/cancel"),
            Some(&olga),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(pushed_state(&mut sub, &b_id, "cancelled").await, ["cancelled"]);

    // Ivan's subscription saw none of it (its socket is still open: a ping is answered first).
    ivan_sub.send(&ClientMessage::Ping { nonce: 9 }).await;
    assert_eq!(ivan_sub.next().await, Some(ServerMessage::Pong { nonce: 9 }));

    guest.send(&ClientMessage::Leave).await;
    guest.until_closed().await;
    assert_eq!(pushed_state(&mut sub, &id, "completed").await, ["completed"]);
    staff.send(&ClientMessage::Leave).await;
    staff.until_closed().await;
    // Nobody left in the meeting: it leaves the queue.
    sub.expect("the meeting idle", |m| {
        matches!(m, ServerMessage::QueueMeeting { meeting: None, meeting_id: mid, .. } if *mid == meeting_id.as_str())
    })
    .await;
}

/// The guest of an appointment cancels it with the token of its own join link
/// (`/api/v1/guest/appointment`, what the lobby's Cancel button calls): another link to
/// the same meeting (an interpreter's), a guest of an ordinary meeting and staff are
/// refused; after the cancel the link is revoked, the transition is `cancelled_by_guest`,
/// and a second cancel is 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_cancels_their_own_appointment_with_the_token_of_its_link() {
    let srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Admin);
    let (_, t) = setup(&srv, &olga, &["olga"], json!({})).await;
    let (status, a) = srv
        .call(
            "POST",
            "/api/v1/appointments",
            Some(&olga),
            Some(json!({ "type_id": t["type_id"], "starts_at": rfc3339(slot_ahead(1)), "guest_name": "Grace", "guest_contact": "grace@example.org" })),
        )
        .await;
    assert_eq!(status, 201, "{a}");
    let id = a["appointment_id"].as_str().unwrap();
    let meeting = a["meeting_id"].as_str().unwrap();
    let grace = srv.redeem(&code_of(&a["join_url"]), "Grace").await;

    // Who is not the appointment's guest learns nothing of it.
    let (status, body) = srv.call("GET", "/api/v1/guest/appointment", None, None).await;
    assert_eq!((status, &body["code"]), (401, &json!("unauthorized")), "{body}");
    let (status, body) = srv.call("GET", "/api/v1/guest/appointment", Some(&olga), None).await;
    assert_eq!((status, &body["code"]), (403, &json!("forbidden")), "{body}");
    let (status, other) = srv
        .call(
            "POST",
            &format!("/api/v1/meetings/{meeting}/links"),
            Some(&olga),
            Some(json!({ "kind": "invite", "invitee": "Ivan Interpreter" })),
        )
        .await;
    assert_eq!(status, 201, "{other}");
    let ivan = srv.redeem(other["code"].as_str().unwrap(), "Ivan").await;
    let (status, m) = srv
        .call(
            "POST",
            "/api/v1/meetings",
            Some(&olga),
            Some(json!({ "title": "Walk-in" })),
        )
        .await;
    assert_eq!(status, 201, "{m}");
    let walk_in = srv.redeem(m["public_link"]["code"].as_str().unwrap(), "Walker").await;
    for (who, token) in [
        ("another link's guest", &ivan),
        ("an ordinary meeting's guest", &walk_in),
    ] {
        for (method, path) in [
            ("GET", "/api/v1/guest/appointment"),
            ("POST", "/api/v1/guest/appointment/cancel"),
        ] {
            let (status, body) = srv.call(method, path, Some(token), None).await;
            assert_eq!(
                (status, &body["code"]),
                (404, &json!("not_found")),
                "{who} {method} {path}: {body}"
            );
        }
    }
    assert_eq!(appointment(&srv, &olga, id).await["state"], "scheduled");

    // The appointment's own guest sees it (no contact: that is for staff) and cancels it.
    let (status, mine) = srv.call("GET", "/api/v1/guest/appointment", Some(&grace), None).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(
        (&mine["appointment"]["appointment_id"], &mine["may_cancel"]),
        (&json!(id), &json!(true)),
        "{mine}"
    );
    assert_eq!(mine["appointment"]["guest_contact"], Value::Null, "{mine}");
    // She waits in the lobby, and cancels (from another tab, say): the gateway ends the
    // appointment's meeting, so her lobby socket is told why and closed.
    let mut lobby = srv.join(&grace, None).await;
    lobby
        .expect("lobby", |m| matches!(m, ServerMessage::Lobby { .. }))
        .await;
    let (status, done) = srv
        .call("POST", "/api/v1/guest/appointment/cancel", Some(&grace), None)
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        lobby.until_closed().await.last(),
        Some(&ServerMessage::Left {
            reason: gatehouse_signaling::protocol::LeaveReason::MeetingEnded,
            message: Some("The guest cancelled the appointment.".into()),
        })
    );
    let (status, m) = srv
        .call("GET", &format!("/api/v1/meetings/{meeting}"), Some(&olga), None)
        .await;
    assert_eq!((status, &m["state"]), (200, &json!("ended")), "{m}");
    assert_eq!(
        (&done["appointment"]["state"], &done["may_cancel"]),
        (&json!("cancelled"), &json!(false)),
        "{done}"
    );
    let a = appointment(&srv, &olga, id).await;
    assert_eq!(a["state"], "cancelled", "{a}");
    assert_eq!(transitions(&a), ["scheduled", "waiting", "cancelled"]);
    assert_eq!(a["transitions"][2]["cause"], "cancelled_by_guest", "{a}");
    // The link is revoked; a second cancel is refused.
    let (status, body) = srv
        .call("GET", &format!("/api/v1/links/{}", code_of(&a["join_url"])), None, None)
        .await;
    assert_eq!((status, &body["code"]), (410, &json!("link_revoked")), "{body}");
    let (status, body) = srv
        .call("POST", "/api/v1/guest/appointment/cancel", Some(&grace), None)
        .await;
    assert_eq!(
        (status, &body["code"]),
        (409, &json!("wrong_appointment_state")),
        "{body}"
    );

    // Staff cancel another appointment while its guest waits: she is told so, and out.
    let (status, b) = srv
        .call(
            "POST",
            "/api/v1/appointments",
            Some(&olga),
            Some(json!({ "type_id": t["type_id"], "starts_at": rfc3339(slot_ahead(2)), "guest_name": "Hedy" })),
        )
        .await;
    assert_eq!(status, 201, "{b}");
    let hedy = srv.redeem(&code_of(&b["join_url"]), "Hedy").await;
    let mut lobby = srv.join(&hedy, None).await;
    lobby
        .expect("lobby", |m| matches!(m, ServerMessage::Lobby { .. }))
        .await;
    let (status, done) = srv
        .call(
            "POST",
            &format!("/api/v1/appointments/{}/cancel", b["appointment_id"].as_str().unwrap()),
            Some(&olga),
            None,
        )
        .await;
    assert_eq!((status, &done["state"]), (200, &json!("cancelled")), "{done}");
    assert_eq!(
        lobby.until_closed().await.last(),
        Some(&ServerMessage::Left {
            reason: gatehouse_signaling::protocol::LeaveReason::MeetingEnded,
            message: Some("The appointment was cancelled.".into()),
        })
    );
}

/// A guest's contact is kept for its type's `contact_retention_days` after the
/// appointment's end, then erased (the store's sweep, driven here with a later `now`; the
/// gateway's clock runs it hourly): the name, state and history stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_contacts_are_erased_after_their_types_retention() {
    const DAY_MS: u64 = 24 * 3600 * 1000;
    let srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Admin);
    let (_, short) = setup(&srv, &olga, &["olga"], json!({ "contact_retention_days": 1 })).await;
    assert_eq!(short["contact_retention_days"], 1, "{short}");
    let (status, default) = srv
        .call(
            "POST",
            "/api/v1/appointment-types",
            Some(&olga),
            Some(json!({ "title": "Follow-up", "staff": ["olga"] })),
        )
        .await;
    assert_eq!(
        (status, default["contact_retention_days"].as_u64()),
        (201, Some(30)),
        "{default}"
    );
    let (status, bad) = srv
        .call(
            "POST",
            "/api/v1/appointment-types",
            Some(&olga),
            Some(json!({ "title": "Never", "staff": ["olga"], "contact_retention_days": 0 })),
        )
        .await;
    assert_eq!((status, bad["code"].as_str()), (400, Some("bad_request")), "{bad}");
    // Both ended two days ago (staff may write down past appointments).
    let start = (now_ms() / MIN_MS) * MIN_MS - 2 * DAY_MS;
    let mut ids = Vec::new();
    for (t, at, name) in [(&short, start, "Ada"), (&default, start + 60 * MIN_MS, "Ben")] {
        let (status, a) = srv
            .call(
                "POST",
                "/api/v1/appointments",
                Some(&olga),
                Some(json!({ "type_id": t["type_id"], "starts_at": rfc3339(at), "guest_name": name, "guest_contact": format!("{name}@example.org") })),
            )
            .await;
        assert_eq!(status, 201, "{a}");
        ids.push(a["appointment_id"].as_str().unwrap().to_owned());
    }
    let store = &srv.state().store;
    let contact = |a: &Value| a["guest_contact"].as_str().map(str::to_owned);
    assert_eq!(store.erase_expired_contacts(now_ms()).unwrap(), 1);
    let (ada, ben) = (
        appointment(&srv, &olga, &ids[0]).await,
        appointment(&srv, &olga, &ids[1]).await,
    );
    assert_eq!(contact(&ada), None, "1 day after its end: erased: {ada}");
    assert_eq!(ada["guest_name"], "Ada", "the name stays: {ada}");
    assert_eq!(
        contact(&ben).as_deref(),
        Some("Ben@example.org"),
        "30 days not over: {ben}"
    );
    // Ben's 30 days run from his end (about 2 days ago): not over 27 days on, over 28.5 days on.
    assert_eq!(store.erase_expired_contacts(now_ms() + 27 * DAY_MS).unwrap(), 0);
    assert_eq!(
        store
            .erase_expired_contacts(now_ms() + 28 * DAY_MS + DAY_MS / 2)
            .unwrap(),
        1
    );
    let ben = appointment(&srv, &olga, &ids[1]).await;
    assert_eq!(contact(&ben), None, "{ben}");
    assert_eq!(
        (
            ben["guest_name"].as_str(),
            transitions(&ben).first().map(String::as_str)
        ),
        (Some("Ben"), Some("scheduled")),
        "the name and the history stay: {ben}"
    );
}

/// The gateway's open signaling sockets, read from `/metrics`.
async fn signaling_connections(srv: &TestServer) -> u64 {
    let (status, metrics) = srv.call("GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let metrics = metrics.as_str().expect("text metrics").to_owned();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("gatehouse_signaling_connections "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no gatehouse_signaling_connections in\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_queue_subscriber_is_taken_as_gone_and_a_read_one_stays() {
    let dir = support::temp_dir("queue-silence");
    let mut config = test_config(&dir);
    config.signaling_silence_secs = Some(3);
    let srv = TestServer::start_with(config).await;
    let olga = srv.staff_token("olga", StaffRole::Staff);

    // Both get their snapshot; from here `silent` is never read, so its library answers
    // none of the gateway's pings, while `read` is read (and answers them) and sends nothing.
    let mut silent = subscribe_queue(&srv, &olga, None).await;
    let mut read = subscribe_queue(&srv, &olga, None).await;
    for sub in [&mut silent, &mut read] {
        assert!(matches!(sub.next().await, Some(ServerMessage::QueueSnapshot { .. })));
    }
    assert_eq!(signaling_connections(&srv).await, 2);
    let quiet_since = std::time::Instant::now();

    // Wait (polling the gauge, while reading `read`) until the gateway drops one socket.
    let poll = async {
        loop {
            if signaling_connections(&srv).await == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        m = read.next() => panic!("nothing was pushed, yet the read subscriber got {m:?}"),
        () = poll => {}
        () = tokio::time::sleep(EVENT_TIMEOUT) => panic!("no queue socket was taken as gone"),
    }
    assert!(
        quiet_since.elapsed() >= Duration::from_millis(2500),
        "dropped only after the silence limit ({:?})",
        quiet_since.elapsed()
    );
    // The silent one is the one closed; the read one, silent itself for longer than the
    // limit but answering pings, still answers.
    assert_eq!(silent.until_closed().await, Vec::<ServerMessage>::new());
    read.send(&ClientMessage::Ping { nonce: 3 }).await;
    read.expect("pong", |m| matches!(m, ServerMessage::Pong { nonce: 3 }))
        .await;
    assert_eq!(signaling_connections(&srv).await, 1);
}

/// Admins change a type's settings and a department's name in place: only what the body
/// names changes, the whole is checked as at creation, a type made private gets its link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_patch_appointment_types_and_rename_departments() {
    let srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Admin);
    let ivan = srv.staff_token("ivan", StaffRole::Staff);
    let (did, t) = setup(&srv, &olga, &["olga"], json!({ "reminders": ["24h"] })).await;
    let path = format!("/api/v1/appointment-types/{}", t["type_id"].as_str().unwrap());
    assert_eq!(t["private_url"], Value::Null, "public: {t}");

    let (status, p) = srv
        .call(
            "PATCH",
            &path,
            Some(&olga),
            Some(json!({ "title": "Mole check", "no_show_minutes": 5, "public": false })),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        (&p["title"], &p["no_show_minutes"]),
        (&json!("Mole check"), &json!(5)),
        "{p}"
    );
    assert_eq!(
        (&p["duration_minutes"], &p["reminders"], &p["department_id"]),
        (&t["duration_minutes"], &t["reminders"], &t["department_id"]),
        "the rest stays: {p}"
    );
    assert!(
        p["private_url"].as_str().is_some_and(|u| u.contains("/book/t/")),
        "made private: {p}"
    );
    let (_, again) = srv.call("GET", &path, Some(&olga), None).await;
    assert_eq!(again, p, "stored");

    for (who, token, body, want) in [
        ("staff", &ivan, json!({ "title": "x" }), (403, "forbidden")),
        ("unknown field", &olga, json!({ "colour": "red" }), (400, "bad_request")),
        (
            "bad value",
            &olga,
            json!({ "duration_minutes": 2 }),
            (400, "bad_request"),
        ),
        ("nothing", &olga, json!({}), (400, "bad_request")),
        ("not an object", &olga, json!([1]), (400, "bad_request")),
        (
            "unknown department",
            &olga,
            json!({ "department_id": "d_none" }),
            (404, "not_found"),
        ),
    ] {
        let (status, body) = srv.call("PATCH", &path, Some(token), Some(body)).await;
        assert_eq!((status, body["code"].as_str().unwrap_or("")), want, "{who}: {body}");
    }
    let (status, body) = srv
        .call(
            "PATCH",
            "/api/v1/appointment-types/at_none",
            Some(&olga),
            Some(json!({ "title": "x" })),
        )
        .await;
    assert_eq!((status, &body["code"]), (404, &json!("not_found")), "{body}");
    let (_, unchanged) = srv.call("GET", &path, Some(&olga), None).await;
    assert_eq!(unchanged, p, "refused patches change nothing");

    // Departments: renamed; a name another has is refused; unknown ids are 404.
    let dpath = format!("/api/v1/departments/{did}");
    let (status, d) = srv
        .call("PATCH", &dpath, Some(&olga), Some(json!({ "name": " Skin clinic " })))
        .await;
    assert_eq!(
        (status, &d["name"], &d["staff"]),
        (200, &json!("Skin clinic"), &json!(["olga"])),
        "{d}"
    );
    let (status, _) = srv
        .call(
            "POST",
            "/api/v1/departments",
            Some(&olga),
            Some(json!({ "name": "Allergy" })),
        )
        .await;
    assert_eq!(status, 201);
    let (status, body) = srv
        .call("PATCH", &dpath, Some(&olga), Some(json!({ "name": "Allergy" })))
        .await;
    assert_eq!((status, &body["code"]), (400, &json!("bad_request")), "{body}");
    let (status, body) = srv
        .call("PATCH", &dpath, Some(&ivan), Some(json!({ "name": "Mine" })))
        .await;
    assert_eq!((status, &body["code"]), (403, &json!("forbidden")), "{body}");
    let (status, body) = srv
        .call(
            "PATCH",
            "/api/v1/departments/d_none",
            Some(&olga),
            Some(json!({ "name": "X" })),
        )
        .await;
    assert_eq!((status, &body["code"]), (404, &json!("not_found")), "{body}");
    let (_, list) = srv.call("GET", "/api/v1/departments", Some(&olga), None).await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(names, ["Allergy", "Skin clinic"]);
}
