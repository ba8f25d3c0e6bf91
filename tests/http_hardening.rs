//! The gateway's edges against a real server: request bodies that are not objects,
//! routing failures, security headers, display names that render blank, and how the
//! signaling socket closes (after `left`, and on a frame over the hard limit).

mod support;

use futures_util::{SinkExt, StreamExt};
use gatehouse_signaling::ErrorCode;
use gatehouse_signaling::protocol::{ClientMessage, LeaveReason, ServerMessage};
use gatehouse_signaling::token::StaffRole;
use serde_json::json;
use support::{EVENT_TIMEOUT, TestServer};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type RawWs = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A signaling socket whose close frame the test can read.
async fn raw_ws(srv: &TestServer) -> RawWs {
    let port = srv.base.rsplit(':').next().unwrap();
    let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        format!("wss://localhost:{port}/ws"),
        None,
        false,
        Some(tokio_tungstenite::Connector::Rustls(srv.tls.clone())),
    )
    .await
    .expect("websocket connects");
    ws
}

/// Reads until the server closes: the text frames as protocol messages, and the close
/// code (`None` for a close frame without one, or no close frame at all).
async fn until_close(
    ws: &mut (impl futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> (Vec<ServerMessage>, Option<CloseCode>) {
    let mut frames = Vec::new();
    loop {
        let next = tokio::time::timeout(EVENT_TIMEOUT, ws.next())
            .await
            .expect("a frame or the close in time");
        match next {
            Some(Ok(Message::Text(t))) => frames.push(serde_json::from_str(&t).expect("a protocol message")),
            Some(Ok(Message::Close(close))) => return (frames, close.map(|c| c.code)),
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => return (frames, None),
        }
    }
}

/// Sends `text` while reading what comes back, as a browser does: the server answers
/// (and closes) before a frame over the hard limit has been sent in full.
async fn send_reading(ws: RawWs, text: String) -> (Vec<ServerMessage>, Option<CloseCode>) {
    let (mut sink, mut stream) = ws.split();
    let sending = tokio::spawn(async move {
        // The server may close while this is still being written: a broken pipe is expected.
        let _ = sink.send(Message::text(text)).await;
        sink
    });
    let answer = until_close(&mut stream).await;
    let _ = sending.await;
    answer
}

fn error_codes(frames: &[ServerMessage]) -> Vec<ErrorCode> {
    frames
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Error { code, .. } => Some(*code),
            _ => None,
        })
        .collect()
}

async fn join_frame(ws: &mut RawWs, token: &str, meeting_id: Option<&str>) {
    let join = ClientMessage::Join {
        protocol: 1,
        token: token.into(),
        meeting_id: meeting_id.map(Into::into),
    };
    ws.send(Message::text(serde_json::to_string(&join).unwrap()))
        .await
        .unwrap();
}

async fn next_message(ws: &mut RawWs) -> ServerMessage {
    loop {
        match tokio::time::timeout(EVENT_TIMEOUT, ws.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(Message::Close(c))) => panic!("closed: {c:?}"),
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_body_must_be_an_object() {
    let srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let meeting = srv.create_meeting(&olga, json!({ "title": "Bodies" })).await;
    let mid = meeting["meeting_id"].as_str().unwrap().to_owned();
    let single = srv.create_link(&olga, &mid, json!({ "kind": "single_use" })).await;
    let code = single["code"].as_str().unwrap().to_owned();

    let routes = [
        ("POST", "/api/v1/meetings".to_owned()),
        ("PATCH", format!("/api/v1/meetings/{mid}")),
        ("POST", format!("/api/v1/meetings/{mid}/links")),
        ("POST", format!("/api/v1/links/{code}/redeem")),
        ("POST", format!("/api/v1/meetings/{mid}/lobby/p_nobody/deny")),
    ];
    // Arrays were read by position (`["x"]` as a display name, `["title"]` as a title).
    let bodies = [
        json!(["x"]),
        json!(["title"]),
        json!(["single_use", null, null]),
        json!([]),
        json!(1),
        json!(-2.5),
        json!("x"),
        json!(""),
        json!(null),
        json!(true),
    ];
    for (method, path) in &routes {
        for body in &bodies {
            let token = (!path.contains("/redeem")).then_some(olga.as_str());
            let (status, answer) = srv.call(method, path, token, Some(body.clone())).await;
            assert_eq!(status, 400, "{method} {path} {body}: {answer}");
            assert_eq!(answer["code"], "bad_request", "{method} {path} {body}: {answer}");
            assert!(answer["message"].as_str().unwrap().contains("JSON object"), "{answer}");
        }
    }

    // Nothing happened: no new meeting or link, the title stands, the link is unused.
    let (_, meetings) = srv.call("GET", "/api/v1/meetings", Some(&olga), None).await;
    assert_eq!(meetings.as_array().unwrap().len(), 1, "{meetings}");
    assert_eq!(meetings[0]["settings"]["title"], "Bodies");
    let (_, links) = srv
        .call("GET", &format!("/api/v1/meetings/{mid}/links"), Some(&olga), None)
        .await;
    assert_eq!(
        links.as_array().unwrap().len(),
        2,
        "public and single-use only: {links}"
    );
    assert!(
        links.as_array().unwrap().iter().all(|l| l["redemptions"] == 0),
        "{links}"
    );

    // Objects still work on every route, and the deny body may still be left out.
    let (status, _) = srv
        .call(
            "PATCH",
            &format!("/api/v1/meetings/{mid}"),
            Some(&olga),
            Some(json!({ "title": "Renamed" })),
        )
        .await;
    assert_eq!(status, 200);
    let resp = srv
        .http
        .post(format!("{}/api/v1/meetings/{mid}/lobby/p_nobody/deny", srv.base))
        .bearer_auth(&olga)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        404,
        "no body is no reason; nobody waits in an idle meeting"
    );
    let (status, body) = srv
        .call(
            "POST",
            &format!("/api/v1/meetings/{mid}/lobby/p_nobody/deny"),
            Some(&olga),
            Some(json!({ "reason": "no" })),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{body}");
    srv.redeem(&code, "Ada").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_failures_answer_with_a_json_error() {
    let srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    for (method, path, status, code) in [
        ("GET", "/nope", 404, "not_found"),
        ("GET", "/api/v1/nope", 404, "not_found"),
        ("GET", "/api/v2/meetings", 404, "not_found"),
        ("GET", "/static/nope.js", 404, "not_found"),
        ("GET", "/j", 404, "not_found"),
        ("DELETE", "/api/v1/meetings", 405, "method_not_allowed"),
        ("PUT", "/api/v1/meetings/m_x", 405, "method_not_allowed"),
        ("GET", "/api/v1/links/abc/redeem", 405, "method_not_allowed"),
        ("POST", "/console", 405, "method_not_allowed"),
        ("POST", "/j/abc", 405, "method_not_allowed"),
        ("DELETE", "/static/styles.css", 405, "method_not_allowed"),
        ("POST", "/healthz", 405, "method_not_allowed"),
    ] {
        let (got, body) = srv.call(method, path, Some(&olga), None).await;
        assert_eq!(got, status, "{method} {path}: {body}");
        assert_eq!(body["code"], code, "{method} {path}: {body}");
        assert!(!body["message"].as_str().unwrap_or_default().is_empty(), "{body}");
    }
    // What exists is still served, HEAD included.
    for path in ["/static/styles.css", "/console", "/j/abc", "/", "/healthz"] {
        let resp = srv.http.get(format!("{}{path}", srv.base)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let resp = srv.http.head(format!("{}{path}", srv.base)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "HEAD {path}");
    }
}

/// A header's value, or "" when absent.
fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().expect("ASCII header"))
        .unwrap_or_default()
}

fn assert_security_headers(resp: &reqwest::Response, what: &str) {
    let csp = header(resp, "content-security-policy");
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ] {
        assert!(csp.contains(directive), "{what}: {directive} missing from {csp:?}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{what}: {csp}"
    );
    assert_eq!(header(resp, "x-frame-options"), "DENY", "{what}");
    assert_eq!(header(resp, "referrer-policy"), "no-referrer", "{what}");
    assert_eq!(header(resp, "x-content-type-options"), "nosniff", "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_assets_and_api_answers_carry_security_headers() {
    let srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let meeting = srv.create_meeting(&olga, json!({ "title": "Headers" })).await;
    let code = meeting["public_link"]["code"].as_str().unwrap().to_owned();

    for path in [
        format!("/j/{code}"),
        "/console".into(),
        "/".into(),
        "/static/join.js".into(),
    ] {
        let resp = srv.http.get(format!("{}{path}", srv.base)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_security_headers(&resp, &path);
        assert_eq!(
            header(&resp, "cache-control"),
            "",
            "{path}: pages and assets may be cached"
        );
        assert_eq!(
            header(&resp, "strict-transport-security"),
            "",
            "{path}: no HSTS with the generated certificate"
        );
    }
    // The pages hold no inline script or style for the policy to block.
    for page in ["join.html", "console.html", "index.html"] {
        let html = std::fs::read_to_string(gatehouse::server::assets::default_web_dir().join(page)).unwrap();
        for inline in ["<script>", "<style", " style=", " onclick=", " onload=", "javascript:"] {
            assert!(!html.contains(inline), "{page} holds {inline}");
        }
        for script in html.split("<script").skip(1) {
            assert!(
                script.split('>').next().unwrap().contains("src=\"/static/"),
                "{page}: <script{script:.60}"
            );
        }
    }

    // API answers, tokens among them, are never stored; errors carry the headers too.
    let redeem = srv
        .http
        .post(format!("{}/api/v1/links/{code}/redeem", srv.base))
        .json(&json!({ "display_name": "Ada" }))
        .send()
        .await
        .unwrap();
    assert_eq!(redeem.status(), 200);
    assert_security_headers(&redeem, "redeem");
    assert_eq!(
        header(&redeem, "cache-control"),
        "no-store",
        "redeem carries a guest token"
    );
    let info = srv
        .http
        .get(format!("{}/api/v1/links/{code}", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&info, "cache-control"), "no-store");
    let refused = srv
        .http
        .get(format!("{}/api/v1/meetings", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_security_headers(&refused, "401");
    assert_eq!(header(&refused, "cache-control"), "no-store");
    let missing = srv.http.get(format!("{}/nope", srv.base)).send().await.unwrap();
    assert_security_headers(&missing, "404");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_only_with_a_configured_certificate() {
    // The operator's own certificate: here one made like the development one, but
    // configured by path, as a real one would be.
    let dir = support::temp_dir("hsts");
    let made = gatehouse::tls::ensure_dev_certificate(&dir.join("own"), &[]).unwrap();
    let mut config = support::test_config(&dir.join("data"));
    config.tls_cert = Some(made.cert.clone());
    config.tls_key = Some(made.key.clone());
    let running = gatehouse::server::start(config).await.expect("server starts");
    assert!(
        running.ca_file.is_none(),
        "no CA is generated for a configured certificate"
    );
    let http = support::https_client(&std::fs::read(made.ca.as_ref().unwrap()).unwrap());
    let base = format!("https://localhost:{}", running.addr.port());
    let mut seen = Vec::new();
    for path in ["/console", "/static/styles.css", "/api/v1/links/nope"] {
        let resp = http.get(format!("{base}{path}")).send().await.unwrap();
        seen.push((path, header(&resp, "strict-transport-security").to_owned()));
    }
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    for (path, hsts) in seen {
        assert_eq!(hsts, "max-age=31536000", "{path}");
    }
    // Its absence with the generated certificate is checked in
    // `pages_assets_and_api_answers_carry_security_headers`.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_nothing_visible_are_refused_and_emoji_names_kept() {
    let srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let meeting = srv.create_meeting(&olga, json!({ "title": "Names" })).await;
    let code = meeting["public_link"]["code"].as_str().unwrap().to_owned();
    for name in [
        "\u{FEFF}",
        "\u{2060}",
        "\u{3164}",
        "\u{00AD}",
        "\u{2800}",
        "\u{180E}",
        "\u{115F}\u{1160}",
        "\u{FFA0}",
        "\u{200D}",
        "\u{E0020}",
        "\u{3164} \u{2800}",
    ] {
        let (status, body) = srv
            .call(
                "POST",
                &format!("/api/v1/links/{code}/redeem"),
                None,
                Some(json!({ "display_name": name })),
            )
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_display_name")),
            "{name:?}: {body}"
        );
    }
    // An invitee is held to the same rule.
    let (status, body) = srv
        .call(
            "POST",
            &format!("/api/v1/meetings/{}/links", meeting["meeting_id"].as_str().unwrap()),
            Some(&olga),
            Some(json!({ "kind": "invite", "invitee": "\u{3164}" })),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_display_name")),
        "{body}"
    );
    for name in ["Zoë", "李小龙", "O'Brien", "👩\u{200D}💻 Ada", "🏳\u{FE0F}\u{200D}🌈"] {
        let (status, body) = srv
            .call(
                "POST",
                &format!("/api/v1/links/{code}/redeem"),
                None,
                Some(json!({ "display_name": name })),
            )
            .await;
        assert_eq!((status, body["display_name"].as_str()), (200, Some(name)), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_close_after_left_is_normal_closure() {
    let srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let meeting = srv.create_meeting(&olga, json!({ "title": "Close" })).await;
    let mid = meeting["meeting_id"].as_str().unwrap().to_owned();
    let mut ws = raw_ws(&srv).await;
    join_frame(&mut ws, &olga, Some(&mid)).await;
    assert!(matches!(next_message(&mut ws).await, ServerMessage::Joined { .. }));
    assert!(matches!(next_message(&mut ws).await, ServerMessage::Admitted { .. }));
    ws.send(Message::text(serde_json::to_string(&ClientMessage::Leave).unwrap()))
        .await
        .unwrap();
    let (frames, close) = until_close(&mut ws).await;
    assert!(
        matches!(
            frames.last(),
            Some(ServerMessage::Left {
                reason: LeaveReason::Left,
                ..
            })
        ),
        "{frames:?}"
    );
    assert_eq!(close, Some(CloseCode::Normal), "the close after `left` is 1000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_hard_limit_is_named_and_closes_with_1009() {
    let srv = TestServer::start().await;
    let olga = srv.staff_token("olga", StaffRole::Staff);
    let meeting = srv.create_meeting(&olga, json!({ "title": "Big" })).await;
    let mid = meeting["meeting_id"].as_str().unwrap().to_owned();
    let huge = "x".repeat(1024 * 1024 + 1);

    // As the first frame.
    let ws = raw_ws(&srv).await;
    let (frames, close) = send_reading(ws, huge.clone()).await;
    assert_eq!(error_codes(&frames), vec![ErrorCode::FrameTooLarge], "{frames:?}");
    assert_eq!(close, Some(CloseCode::Size));

    // In the call: the same, and the participant is out like any dropped connection.
    let mut ws = raw_ws(&srv).await;
    join_frame(&mut ws, &olga, Some(&mid)).await;
    assert!(matches!(next_message(&mut ws).await, ServerMessage::Joined { .. }));
    assert!(matches!(next_message(&mut ws).await, ServerMessage::Admitted { .. }));
    let (frames, close) = send_reading(ws, huge).await;
    assert_eq!(error_codes(&frames), vec![ErrorCode::FrameTooLarge], "{frames:?}");
    assert_eq!(close, Some(CloseCode::Size));
    srv.wait_until("the sender is out of the call", |s| {
        s.state().metrics.participants_in_call.get() == 0 && s.state().metrics.signaling_connections.get() == 0
    })
    .await;

    // Exactly at the limit is not over it: the soft limit answers and the socket goes on.
    let mut ws = raw_ws(&srv).await;
    join_frame(&mut ws, &olga, Some(&mid)).await;
    assert!(matches!(next_message(&mut ws).await, ServerMessage::Joined { .. }));
    assert!(matches!(next_message(&mut ws).await, ServerMessage::Admitted { .. }));
    ws.send(Message::text("y".repeat(1024 * 1024))).await.unwrap();
    ws.send(Message::text(r#"{"type":"ping","nonce":7}"#)).await.unwrap();
    // Roster and lobby frames may come between; the error comes before the pong.
    let mut errors = Vec::new();
    loop {
        match next_message(&mut ws).await {
            ServerMessage::Error { code, .. } => errors.push(code),
            ServerMessage::Pong { nonce: 7 } => break,
            _ => continue,
        }
    }
    assert_eq!(errors, vec![ErrorCode::FrameTooLarge]);
}
