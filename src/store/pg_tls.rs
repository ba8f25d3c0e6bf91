//! TLS to PostgreSQL: what `database_url` asks for, and the connector that does it.
//!
//! The URL takes libpq's names: `sslmode` (`disable`, `prefer`, `require`, `verify-ca`,
//! `verify-full`) and `sslrootcert` (a PEM file of the CA that signed the server's
//! certificate). Gatehouse either speaks TLS and verifies the server's certificate, chain and
//! name, or speaks plaintext; it never encrypts without checking whom it talks to, which
//! protects against nobody who can change packets. So `require`, `verify-ca` and
//! `verify-full` all mean "TLS, the certificate verified against `sslrootcert` (else the
//! public web's roots), its name matching the URL's host"; `disable` and `prefer` (libpq's
//! default, whose TLS is unverified) mean plaintext, as before this module; an `sslrootcert`
//! without a verifying mode is refused rather than silently unused. What the URL asks for is
//! decided in [`Target::parse`] (pure); [`Target::connect`] makes a blocking client with it.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use postgres::{Client, NoTls, Socket};
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How to reach the database: the URL as the `postgres` crate reads it, and TLS or not.
#[derive(Clone)]
pub struct Target {
    /// `database_url` without `sslrootcert`, its `sslmode` one the client knows.
    url: String,
    /// `None`: plaintext.
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// What `database_url` asks for, before any file is read.
#[derive(Debug, PartialEq, Eq)]
pub struct Wanted {
    /// The URL for the `postgres` crate.
    pub url: String,
    /// `None`: plaintext; `Some(roots)`: TLS verified against `roots` (`None`: the public
    /// web's roots).
    pub tls: Option<Option<PathBuf>>,
}

impl Wanted {
    /// Reads `sslmode` and `sslrootcert` off `database_url` (see the module's doc).
    pub fn of(database_url: &str) -> Result<Wanted, String> {
        let mut url = url::Url::parse(database_url).map_err(|_| "database_url is not a URL".to_owned())?;
        let mut mode = None;
        let mut root = None;
        let mut kept = Vec::new();
        for (k, v) in url.query_pairs() {
            match &*k {
                "sslmode" => mode = Some(v.into_owned()),
                "sslrootcert" => root = Some(v.into_owned()),
                _ => kept.push((k.into_owned(), v.into_owned())),
            }
        }
        let verified = match mode.as_deref() {
            None | Some("disable" | "prefer") => false,
            Some("require" | "verify-ca" | "verify-full") => true,
            Some(other) => {
                return Err(format!(
                    "database_url: sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                ));
            }
        };
        if !verified && root.is_some() {
            return Err(
                "database_url: sslrootcert is given but sslmode does not ask for TLS (say sslmode=verify-full)".into(),
            );
        }
        if root.as_deref() == Some("") {
            return Err("database_url: sslrootcert is empty".into());
        }
        let client_mode = match mode.as_deref() {
            None => None,
            Some(_) if verified => Some("require"),
            Some(m) => Some(m),
        };
        url.set_query(None);
        if !kept.is_empty() || client_mode.is_some() {
            let mut q = url.query_pairs_mut();
            for (k, v) in &kept {
                q.append_pair(k, v);
            }
            if let Some(m) = client_mode {
                q.append_pair("sslmode", m);
            }
        }
        Ok(Wanted {
            url: url.into(),
            tls: verified.then(|| root.map(PathBuf::from)),
        })
    }
}

impl Target {
    /// What `database_url` asks for, its root certificates read (at start: a missing or
    /// unreadable file fails there, not at the first connection).
    pub fn parse(database_url: &str) -> anyhow::Result<Target> {
        let wanted = Wanted::of(database_url).map_err(anyhow::Error::msg)?;
        let tls = match wanted.tls {
            None => None,
            Some(root) => Some(Arc::new(client_config(root.as_deref())?)),
        };
        Ok(Target { url: wanted.url, tls })
    }

    /// Whether connections are TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A new blocking client.
    pub fn connect(&self) -> Result<Client, postgres::Error> {
        match &self.tls {
            None => Client::connect(&self.url, NoTls),
            Some(config) => Client::connect(&self.url, RustlsConnect(config.clone())),
        }
    }
}

fn client_config(root: Option<&std::path::Path>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match root {
        Some(path) => {
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| anyhow::anyhow!("database_url: sslrootcert {}: {e}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                anyhow::bail!("database_url: sslrootcert {} holds no certificate", path.display());
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The `postgres` client's TLS, by tokio-rustls.
#[derive(Clone)]
struct RustlsConnect(Arc<rustls::ClientConfig>);

struct RustlsConnector {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl MakeTlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnector;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnector, Self::Error> {
        Ok(RustlsConnector {
            config: self.0.clone(),
            name: ServerName::try_from(domain.to_owned())?,
        })
    }
}

impl TlsConnect<Socket> for RustlsConnector {
    type Stream = RustlsStream;
    type Error = std::io::Error;
    type Future = BoxFuture<'static, std::io::Result<RustlsStream>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let tls = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await?;
            Ok(RustlsStream(tls))
        })
    }
}

/// A TLS session to the server.
struct RustlsStream(tokio_rustls::client::TlsStream<Socket>);

impl TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM without channel binding, as over plaintext: the certificate check is what
        // makes the session the server's.
        ChannelBinding::none()
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(url: &str) -> Wanted {
        Wanted::of(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn plaintext_unless_a_verifying_mode_is_asked_for() {
        for (url, client) in [
            ("postgres://gh@db/gh", "postgres://gh@db/gh"),
            (
                "postgres://gh@db/gh?sslmode=disable",
                "postgres://gh@db/gh?sslmode=disable",
            ),
            // libpq's default, whose TLS checks nothing: plaintext here, as before.
            (
                "postgres://gh@db/gh?sslmode=prefer",
                "postgres://gh@db/gh?sslmode=prefer",
            ),
        ] {
            assert_eq!(
                want(url),
                Wanted {
                    url: client.into(),
                    tls: None
                }
            );
        }
    }

    #[test]
    fn every_verifying_mode_is_tls_with_the_certificate_checked() {
        for mode in ["require", "verify-ca", "verify-full"] {
            let w = want(&format!(
                "postgresql://gh:pw@db.internal:5433/gh?application_name=gatehouse&sslmode={mode}&sslrootcert=/etc/gh/ca.pem"
            ));
            assert_eq!(w.tls, Some(Some(PathBuf::from("/etc/gh/ca.pem"))), "{mode}");
            // The client gets a mode it knows and no sslrootcert (which it would refuse);
            // other parameters stay.
            assert_eq!(
                w.url, "postgresql://gh:pw@db.internal:5433/gh?application_name=gatehouse&sslmode=require",
                "{mode}"
            );
        }
        let w = want("postgres://gh@db/gh?sslmode=verify-full");
        assert_eq!(w.tls, Some(None), "no sslrootcert: the public web's roots");
    }

    #[test]
    fn contradictions_and_unknown_modes_are_refused() {
        for (url, says) in [
            ("postgres://gh@db/gh?sslmode=allow", "sslmode=allow"),
            ("postgres://gh@db/gh?sslmode=VERIFY-FULL", "sslmode=VERIFY-FULL"),
            ("postgres://gh@db/gh?sslrootcert=/ca.pem", "sslrootcert"),
            ("postgres://gh@db/gh?sslmode=prefer&sslrootcert=/ca.pem", "sslrootcert"),
            ("postgres://gh@db/gh?sslmode=verify-full&sslrootcert=", "empty"),
            ("not a url", "not a URL"),
        ] {
            let e = Wanted::of(url).expect_err(url);
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn a_root_file_that_is_missing_or_holds_no_certificate_fails_at_start() {
        let dir = std::env::temp_dir().join(format!("gatehouse-pgtls-{}", crate::ids::random_code(10)));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let e = Target::parse(&format!(
            "postgres://gh@db/gh?sslmode=verify-full&sslrootcert={}",
            missing.display()
        ))
        .err()
        .expect("a missing file is an error");
        assert!(e.to_string().contains("missing.pem"), "{e}");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no PEM here\n").unwrap();
        let e = Target::parse(&format!(
            "postgres://gh@db/gh?sslmode=verify-full&sslrootcert={}",
            empty.display()
        ))
        .err()
        .expect("a file without a certificate is an error");
        assert!(e.to_string().contains("no certificate"), "{e}");
        let plain = Target::parse("postgres://gh@db/gh").unwrap();
        assert!(!plain.tls());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A real PostgreSQL speaking TLS with a certificate from a CA of the test's own.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_real_server_is_reached_over_verified_tls_and_a_stranger_is_refused() {
        use crate::store::testing::TestPostgres;
        let dir = std::env::temp_dir().join(format!("gatehouse-pgtls-{}", crate::ids::random_code(10)));
        let server = crate::tls::ensure_dev_certificate(&dir.join("server"), &[]).unwrap();
        let Some(pg) = TestPostgres::start_with_tls(&server.cert, &server.key) else {
            return;
        };
        let ca = server.ca.clone().unwrap();
        let base = format!("postgres://gatehouse@localhost:{}/postgres", pg.port());
        let ssl = |c: &mut Client| -> bool {
            c.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
                .unwrap()
                .get(0)
        };
        let verified = format!("{base}?sslmode=verify-full&sslrootcert={}", ca.display());
        let mut c = Target::parse(&verified)
            .unwrap()
            .connect()
            .expect("a session verified against the server's CA");
        assert!(ssl(&mut c), "the server sees a TLS session");
        // The whole store over it: the pool, the migrations, a read back.
        let store = crate::store::Store::open_postgres(&verified).expect("the store over TLS");
        assert_eq!(store.dialect(), crate::store::db::Dialect::Postgres);
        // Without sslmode: plaintext, as before.
        let mut c = Target::parse(&base).unwrap().connect().expect("plaintext still works");
        assert!(!ssl(&mut c), "no sslmode, no TLS");
        // A CA that did not sign the server's certificate, or the public web's roots: refused.
        let stranger = crate::tls::ensure_dev_certificate(&dir.join("stranger"), &[]).unwrap();
        for url in [
            format!(
                "{base}?sslmode=verify-full&sslrootcert={}",
                stranger.ca.unwrap().display()
            ),
            format!("{base}?sslmode=require"),
        ] {
            let e = Target::parse(&url)
                .unwrap()
                .connect()
                .err()
                .expect("an unknown issuer is refused");
            let why = format!("{:#}", anyhow::Error::from(e));
            assert!(why.contains("invalid peer certificate"), "{url}: {why}");
            let e = crate::store::Store::open_postgres(&url)
                .err()
                .expect("and the store does not open");
            assert!(format!("{e:#}").contains("database_url"), "{e:#}");
        }
        drop(pg);
        // A server without TLS: a verifying mode does not fall back to plaintext.
        let Some(plain) = TestPostgres::start() else { return };
        let url = format!(
            "postgres://gatehouse@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
            plain.port(),
            ca.display()
        );
        let e = Target::parse(&url)
            .unwrap()
            .connect()
            .err()
            .expect("no TLS, no session");
        assert!(e.to_string().contains("TLS"), "{e:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
