//! OAuth2 access tokens minted by the sink, the way the mail services
//! prescribe for app-only access:
//! - Exchange Online: client-credentials grant at the tenant's token
//!   endpoint, authenticated by a client secret or, preferably, by a client
//!   assertion (a JWT signed RS256 with the app's certificate key, `x5t` =
//!   the certificate's SHA-1 thumbprint). One token serves every mailbox.
//! - Google Workspace: a service account with domain-wide delegation signs a
//!   JWT whose `sub` is the target mailbox (JWT-bearer grant, RFC 7523): one
//!   token per mailbox.
//!
//! Tokens are cached until shortly before they expire, kept as
//! [`SecretValue`] (whose `Debug` hides them) and never logged; the signing
//! key and the client secret are read from the connector's secret.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use crate::error::{Error, Result};
use crate::ports::SecretValue;

/// Exchange Online's (Entra ID) token endpoint; `{tenant}` is replaced.
pub const EXCHANGE_TOKEN_URL: &str = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token";
pub const EXCHANGE_SCOPE: &str = "https://outlook.office365.com/.default";
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
pub const GOOGLE_SCOPE: &str = "https://mail.google.com/";

/// A token endpoint's answer is small; anything larger is not one.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Lifetime of the assertions the sink signs (both services accept up to 1 h).
const ASSERTION_SECS: u64 = 600;
/// A token is replaced this long before it expires (a long batch must not
/// log in with a token about to lapse), or at half its life when shorter.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// What the sink proves at the token endpoint.
#[derive(Debug, Clone)]
pub enum Grant {
    /// Client credentials with `client_secret`.
    ClientSecret { client_id: String },
    /// Client credentials with a signed client assertion; `x5t` is the
    /// base64url SHA-1 thumbprint of the registered certificate.
    ClientAssertion { client_id: String, x5t: String },
    /// JWT-bearer: a service account acting as each mailbox.
    JwtBearer {
        client_email: String,
        key_id: Option<String>,
    },
}

impl Grant {
    /// Whether one token serves every mailbox (app-only grants) or each
    /// mailbox needs its own (delegation to `sub`).
    pub fn per_mailbox(&self) -> bool {
        matches!(self, Grant::JwtBearer { .. })
    }

    fn client(&self) -> &str {
        match self {
            Grant::ClientSecret { client_id } | Grant::ClientAssertion { client_id, .. } => {
                client_id
            }
            Grant::JwtBearer { client_email, .. } => client_email,
        }
    }
}

/// The x5t header value from a thumbprint as the Azure portal shows it (hex,
/// colons or blanks allowed).
pub fn x5t_from_thumbprint(thumbprint: &str) -> Result<String> {
    let hex_digits: String = thumbprint
        .chars()
        .filter(|c| !matches!(c, ':' | ' '))
        .collect();
    let bytes = hex::decode(&hex_digits)
        .ok()
        .filter(|b| b.len() == 20)
        .ok_or_else(|| {
            Error::Config(
                "imap.auth.certificate_thumbprint must be the certificate's SHA-1 thumbprint \
                 (40 hex digits)"
                    .into(),
            )
        })?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

struct Cached {
    token: SecretValue,
    refresh_at: Instant,
}

/// Mints and caches tokens for one sink.
pub struct Tokens {
    grant: Grant,
    url: hyper::Uri,
    scope: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    cache: tokio::sync::Mutex<HashMap<String, Cached>>,
}

impl Tokens {
    /// `tls` is `None` only for a plaintext (`http://`) endpoint, which the
    /// caller allows only under the loudly named testing flag.
    pub fn new(
        grant: Grant,
        url: &str,
        scope: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> Result<Self> {
        let url: hyper::Uri = url
            .parse()
            .map_err(|e| Error::Config(format!("imap.auth.token_url {url:?}: {e}")))?;
        if url.host().is_none() {
            return Err(Error::Config(format!(
                "imap.auth.token_url {url} names no host"
            )));
        }
        Ok(Self {
            grant,
            url,
            scope: scope.to_string(),
            tls,
            timeout,
            cache: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    pub fn is_plaintext(&self) -> bool {
        self.url.scheme_str() == Some("http")
    }

    /// Who asks where, for error messages (no secret in it).
    pub fn describe(&self) -> String {
        format!(
            "client {} at token endpoint {}",
            self.grant.client(),
            self.url
        )
    }

    /// A token for the mailbox: the cached one unless `fresh` (the server
    /// refused it) or it is about to expire. `secret` is the client secret or
    /// the private key (PEM), as the grant needs.
    pub async fn token(
        &self,
        mailbox: &str,
        secret: &SecretValue,
        fresh: bool,
    ) -> Result<SecretValue> {
        let key = if self.grant.per_mailbox() {
            mailbox.to_string()
        } else {
            String::new()
        };
        // Held while minting: concurrent sessions wait for one request
        // instead of each asking the endpoint.
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache
            .get(&key)
            .filter(|c| !fresh && c.refresh_at > Instant::now())
        {
            return Ok(cached.token.clone());
        }
        let (token, lifetime) = self.mint(mailbox, secret).await?;
        tracing::debug!(
            mailbox,
            client = self.grant.client(),
            lifetime_secs = lifetime.as_secs(),
            "OAuth2 token obtained"
        );
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        cache.insert(
            key,
            Cached {
                token: token.clone(),
                refresh_at: Instant::now() + lifetime - margin,
            },
        );
        Ok(token)
    }

    async fn mint(&self, mailbox: &str, secret: &SecretValue) -> Result<(SecretValue, Duration)> {
        let form = self.form(mailbox, secret)?;
        // Unreachable is not refused: an I/O error, the run is retried.
        let (status, body) = self.post(form).await.map_err(|e| {
            Error::io(
                format!("asking {} for a token for {mailbox}", self.describe()),
                std::io::Error::other(e),
            )
        })?;
        parse_answer(status, &body).map_err(|reason| Error::Mailbox {
            mailbox: mailbox.to_string(),
            reason: format!("{} refused a token: {reason}", self.describe()),
        })
    }

    /// The form of the token request (it holds secrets: never logged).
    fn form(&self, mailbox: &str, secret: &SecretValue) -> Result<String> {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        match &self.grant {
            Grant::ClientSecret { client_id } => {
                pairs.push(("grant_type", "client_credentials".into()));
                pairs.push(("client_id", client_id.clone()));
                pairs.push(("client_secret", secret.expose().to_string()));
                pairs.push(("scope", self.scope.clone()));
            }
            Grant::ClientAssertion { client_id, x5t } => {
                let assertion = self.client_assertion(client_id, x5t, secret)?;
                pairs.push(("grant_type", "client_credentials".into()));
                pairs.push(("client_id", client_id.clone()));
                pairs.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                pairs.push(("client_assertion", assertion));
                pairs.push(("scope", self.scope.clone()));
            }
            Grant::JwtBearer {
                client_email,
                key_id,
            } => {
                let assertion = self.delegation(client_email, key_id, mailbox, secret)?;
                pairs.push((
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:jwt-bearer".into(),
                ));
                pairs.push(("assertion", assertion));
            }
        }
        Ok(form_encode(&pairs))
    }

    /// Microsoft's certificate credential: iss = sub = client id, aud = the
    /// token endpoint, a fresh jti.
    fn client_assertion(&self, client_id: &str, x5t: &str, key: &SecretValue) -> Result<String> {
        let now = unix_now();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.x5t = Some(x5t.to_string());
        let claims = serde_json::json!({
            "aud": self.url.to_string(),
            "iss": client_id,
            "sub": client_id,
            "jti": hex::encode(rand::random::<[u8; 16]>()),
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_SECS,
        });
        sign(&header, &claims, key)
    }

    /// Google's domain-wide delegation: the service account asks for a token
    /// of `sub` = the mailbox with the IMAP scope.
    fn delegation(
        &self,
        client_email: &str,
        key_id: &Option<String>,
        mailbox: &str,
        key: &SecretValue,
    ) -> Result<String> {
        let now = unix_now();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = key_id.clone();
        let claims = serde_json::json!({
            "iss": client_email,
            "sub": mailbox,
            "scope": self.scope,
            "aud": self.url.to_string(),
            "iat": now,
            "exp": now + ASSERTION_SECS,
        });
        sign(&header, &claims, key)
    }

    /// One HTTP/1.1 POST; returns the status and the body.
    async fn post(&self, form: String) -> std::result::Result<(u16, Bytes), String> {
        let host = self.url.host().unwrap_or_default().to_string();
        let plain = self.is_plaintext();
        let port = self.url.port_u16().unwrap_or(if plain { 80 } else { 443 });
        // Origin form (`POST /path`): the absolute form is meant for proxies.
        let target = self.url.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let request = hyper::Request::post(target)
            .header(hyper::header::HOST, host.as_str())
            .header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(hyper::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| format!("connecting: {e}"))?;
            match (&self.tls, plain) {
                (_, true) => send(tcp, request).await,
                (Some(tls), false) => {
                    let name = rustls::pki_types::ServerName::try_from(host.clone())
                        .map_err(|e| e.to_string())?;
                    let stream = tokio_rustls::TlsConnector::from(tls.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|e| format!("TLS: {e}"))?;
                    send(stream, request).await
                }
                (None, false) => Err("no TLS configuration".to_string()),
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| "timed out".to_string())?
    }
}

async fn send<S>(
    stream: S,
    request: hyper::Request<Full<Bytes>>,
) -> std::result::Result<(u16, Bytes), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    driver.abort();
    Ok((status, body))
}

fn sign(
    header: &jsonwebtoken::Header,
    claims: &serde_json::Value,
    key: &SecretValue,
) -> Result<String> {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(key.expose().as_bytes()).map_err(|e| {
        Error::Config(format!(
            "the OAuth2 private key is not an RSA private key in PEM: {e}"
        ))
    })?;
    jsonwebtoken::encode(header, claims, &key)
        .map_err(|e| Error::Config(format!("signing the OAuth2 assertion: {e}")))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn form_encode(pairs: &[(&str, String)]) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, NON_ALPHANUMERIC),
                utf8_percent_encode(v, NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The token and its lifetime from a token endpoint's JSON, or the
/// endpoint's own error (RFC 6749 section 5.2: `error`, `error_description`,
/// which carry no secret).
fn parse_answer(status: u16, body: &[u8]) -> std::result::Result<(SecretValue, Duration), String> {
    let json: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| format!("HTTP {status} with an answer that is not JSON"))?;
    let text = |name: &str| json.get(name).and_then(|v| v.as_str()).map(str::to_string);
    if !(200..300).contains(&status) {
        let error = text("error").unwrap_or_else(|| "no error code".into());
        let description = text("error_description").unwrap_or_default();
        return Err(format!("HTTP {status}: {error} {description}")
            .trim()
            .to_string());
    }
    let token = text("access_token").ok_or("the answer has no access_token")?;
    // Entra's v1 endpoint writes expires_in as a string.
    let lifetime = json
        .get("expires_in")
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
        .unwrap_or(3600);
    Ok((
        SecretValue::new(token),
        Duration::from_secs(lifetime.max(1)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_become_x5t() {
        let hex = "5F:3A:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:01:02";
        let x5t = x5t_from_thumbprint(hex).unwrap();
        let back = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&x5t)
            .unwrap();
        assert_eq!(hex::encode_upper(back), hex.replace(':', ""));
        assert!(x5t_from_thumbprint("abc").is_err());
    }

    #[test]
    fn answers_give_the_token_or_the_endpoints_reason() {
        let (token, life) =
            parse_answer(200, br#"{"access_token":"t0k","expires_in":"3599"}"#).unwrap();
        assert_eq!((token.expose(), life.as_secs()), ("t0k", 3599));
        let refused = parse_answer(
            400,
            br#"{"error":"invalid_grant","error_description":"Invalid email or User ID"}"#,
        )
        .unwrap_err();
        assert!(
            refused.contains("invalid_grant") && refused.contains("User ID"),
            "{refused}"
        );
        assert!(parse_answer(200, b"{}").is_err());
        assert!(parse_answer(502, b"<html>").unwrap_err().contains("502"));
    }

    #[test]
    fn forms_are_percent_encoded() {
        let form = form_encode(&[("scope", GOOGLE_SCOPE.into()), ("a b", "x&y=z".into())]);
        assert_eq!(
            form,
            "scope=https%3A%2F%2Fmail%2Egoogle%2Ecom%2F&a%20b=x%26y%3Dz"
        );
    }
}
