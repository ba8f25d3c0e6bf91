//! The gateway's REST API: meetings, links, link redemption.
//!
//! Responses are typed only where the SDK relies on a field; everything else
//! stays in each struct's `extra` map, so small server changes do not break
//! clients. [`RestClient::request`] is the escape hatch for any other endpoint.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use gatehouse_signaling::ErrorCode;

use crate::error::{Result, SdkError};
use crate::tls::{TlsOptions, client_config, install_crypto_provider};

/// Who skips the lobby (the protocol crate's type).
pub use gatehouse_signaling::meeting::LobbyBypass;

/// Body of `POST /api/v1/meetings`; only `title` is required.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NewMeeting {
    /// Shown to everyone joining.
    pub title: String,
    /// Who skips the lobby.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lobby_bypass: Option<LobbyBypass>,
    /// Whether the public link admits guests without an invitation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_anonymous: Option<bool>,
    /// Whether guests may share their screen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guests_may_present: Option<bool>,
    /// Whether chat is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_enabled: Option<bool>,
    /// Call size limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_participants: Option<u32>,
    /// How long a guest may wait in the lobby.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lobby_timeout_secs: Option<u64>,
    /// Staff subjects on the invite list.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub invited_staff: Vec<String>,
}

/// A link anyone can open, as the meeting JSON carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct PublicLink {
    /// The code to redeem.
    pub code: String,
    /// The join page URL.
    pub url: String,
}

/// A meeting as the server returns it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Meeting {
    /// `m_...`.
    pub meeting_id: String,
    /// The title.
    pub title: String,
    /// The public link, when the meeting has one.
    pub public_link: Option<PublicLink>,
    /// Every other field, untyped.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Kind of link (the protocol crate's type; the API makes `invite` and `single_use` links).
pub use gatehouse_signaling::link::LinkKind;

/// Body of `POST /api/v1/meetings/{id}/links`.
#[derive(Debug, Clone, Serialize)]
pub struct NewLink {
    /// Invite or single use.
    pub kind: LinkKind,
    /// The invitee's name, shown to staff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invitee: Option<String>,
    /// Lifetime of the link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
}

/// A created link.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Link {
    /// Server id of the link.
    pub link_id: String,
    /// The code to redeem.
    pub code: String,
    /// The join page URL.
    pub url: String,
    /// `invite` or `single_use`.
    pub kind: String,
    /// Expiry, Unix milliseconds, if any.
    pub expires_at_ms: Option<u64>,
    /// Every other field, untyped.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What redeeming a link gives a guest: a token for [`crate::ConnectOptions`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Redeemed {
    /// The guest token (names its meeting).
    pub token: String,
    /// The meeting.
    pub meeting_id: String,
    /// The guest's participant id.
    pub participant_id: String,
    /// Token expiry, Unix milliseconds.
    pub expires_at_ms: u64,
    /// Every other field, untyped.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A client for the REST API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RestClient {
    http: reqwest::Client,
    base: url::Url,
    token: Option<String>,
}

impl RestClient {
    /// A client for the server at `base_url` (`https://host:port`), without a token.
    ///
    /// ```no_run
    /// # async fn run() -> gatehouse_sdk::Result<()> {
    /// use gatehouse_sdk::{LinkKind, NewLink, NewMeeting, RestClient, TlsOptions};
    /// let tls = TlsOptions { ca_pem: None, danger_accept_invalid_certs: true };
    /// let staff = RestClient::new("https://localhost:8443", &tls)?.with_token("staff-token");
    /// let meeting = staff.create_meeting(&NewMeeting { title: "Follow-up".into(), ..Default::default() }).await?;
    /// let link = staff
    ///     .create_link(&meeting.meeting_id, &NewLink { kind: LinkKind::SingleUse, invitee: Some("Ann".into()), expires_in_secs: None })
    ///     .await?;
    /// let guest = RestClient::new("https://localhost:8443", &tls)?.redeem_link(&link.code, "Ann").await?;
    /// println!("guest token for {}", guest.participant_id);
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(base_url: &str, tls: &TlsOptions) -> Result<RestClient> {
        install_crypto_provider();
        let base = url::Url::parse(base_url).map_err(|e| SdkError::InvalidUrl {
            url: base_url.to_owned(),
            reason: e.to_string(),
        })?;
        if !matches!(base.scheme(), "https" | "http") {
            return Err(SdkError::InvalidUrl {
                url: base_url.to_owned(),
                reason: "expected https://".into(),
            });
        }
        let mut builder = reqwest::Client::builder();
        if let Some(config) = client_config(tls)? {
            builder = builder.tls_backend_preconfigured(config);
        }
        Ok(RestClient {
            http: builder.build()?,
            base,
            token: None,
        })
    }

    /// The same client, sending `Authorization: Bearer <token>` (a staff token).
    pub fn with_token(mut self, token: impl Into<String>) -> RestClient {
        self.token = Some(token.into());
        self
    }

    /// `POST /api/v1/meetings`.
    pub async fn create_meeting(&self, meeting: &NewMeeting) -> Result<Meeting> {
        self.typed(Method::POST, "/api/v1/meetings", Some(serde_json::to_value(meeting)?))
            .await
    }

    /// `GET /api/v1/meetings/{id}`.
    pub async fn get_meeting(&self, meeting_id: &str) -> Result<Meeting> {
        self.typed(Method::GET, &format!("/api/v1/meetings/{meeting_id}"), None)
            .await
    }

    /// `POST /api/v1/meetings/{id}/links`.
    pub async fn create_link(&self, meeting_id: &str, link: &NewLink) -> Result<Link> {
        self.typed(
            Method::POST,
            &format!("/api/v1/meetings/{meeting_id}/links"),
            Some(serde_json::to_value(link)?),
        )
        .await
    }

    /// `POST /api/v1/links/{code}/redeem` (no token needed).
    pub async fn redeem_link(&self, code: &str, display_name: &str) -> Result<Redeemed> {
        let body = serde_json::json!({ "display_name": display_name });
        self.typed(Method::POST, &format!("/api/v1/links/{code}/redeem"), Some(body))
            .await
    }

    async fn typed<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T> {
        Ok(serde_json::from_value(self.request(method, path, body).await?)?)
    }

    /// Any endpoint: sends `body` as JSON, returns the JSON answer (`null` for
    /// an empty body), or [`SdkError::Api`] with the server's code.
    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let url = self.base.join(path).map_err(|e| SdkError::InvalidUrl {
            url: path.to_owned(),
            reason: e.to_string(),
        })?;
        let mut request = self.http.request(method, url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        if (200..300).contains(&status) {
            return if text.trim().is_empty() {
                Ok(Value::Null)
            } else {
                Ok(serde_json::from_str(&text)?)
            };
        }
        Err(api_error(status, &text))
    }
}

/// Turns an error response into [`SdkError::Api`], keeping unknown codes as text.
fn api_error(status: u16, body: &str) -> SdkError {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let code_text = field("code").unwrap_or_default();
    let code = serde_json::from_value::<ErrorCode>(Value::String(code_text.clone())).ok();
    let message = field("message").unwrap_or_else(|| body.to_owned());
    SdkError::Api {
        status,
        code,
        code_text,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_become_typed_codes() {
        let e = api_error(410, r#"{"code":"link_used","message":"already redeemed"}"#);
        assert_eq!(e.code(), Some(ErrorCode::LinkUsed));
        assert!(matches!(e, SdkError::Api { status: 410, ref message, .. } if message == "already redeemed"));
        let e = api_error(418, r#"{"code":"teapot","message":"short and stout"}"#);
        assert!(matches!(e, SdkError::Api { code: None, ref code_text, .. } if code_text == "teapot"));
        let e = api_error(502, "Bad Gateway");
        assert!(matches!(e, SdkError::Api { code: None, ref message, .. } if message == "Bad Gateway"));
    }

    #[test]
    fn new_meeting_sends_only_what_is_set() {
        let body = serde_json::to_value(NewMeeting {
            title: "Front desk".into(),
            lobby_bypass: Some(LobbyBypass::OrganizerOnly),
            ..NewMeeting::default()
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"title": "Front desk", "lobby_bypass": "organizer_only"})
        );
        let link = serde_json::to_value(NewLink {
            kind: LinkKind::SingleUse,
            invitee: None,
            expires_in_secs: Some(60),
        })
        .unwrap();
        assert_eq!(link, serde_json::json!({"kind": "single_use", "expires_in_secs": 60}));
    }

    #[test]
    fn responses_tolerate_missing_and_extra_fields() {
        let m: Meeting = serde_json::from_value(serde_json::json!({
            "meeting_id": "m_1", "title": "T", "public_link": {"code": "abc", "url": "https://x/j/abc"},
            "chat_enabled": true, "new_field": [1]
        }))
        .unwrap();
        assert_eq!(m.meeting_id, "m_1");
        assert_eq!(m.public_link.unwrap().code, "abc");
        assert_eq!(m.extra["chat_enabled"], Value::Bool(true));
        let r: Redeemed = serde_json::from_value(serde_json::json!({"token": "t", "meeting_id": "m_1"})).unwrap();
        assert_eq!(r.token, "t");
        assert_eq!(r.expires_at_ms, 0);
    }

    #[test]
    fn base_url_must_be_http() {
        assert!(matches!(
            RestClient::new("wss://x", &TlsOptions::default()),
            Err(SdkError::InvalidUrl { .. })
        ));
        assert!(RestClient::new("https://127.0.0.1:8443", &TlsOptions::default()).is_ok());
    }
}
