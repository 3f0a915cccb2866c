//! A small OAuth2 token endpoint on loopback, standing in for Entra ID and
//! Google's token service so that the sink's real token code runs end to
//! end. It implements the three ways the sink asks:
//! - client credentials with `client_secret` (checked against the app's);
//! - client credentials with a `client_assertion` (RS256 signature checked
//!   with the app certificate's public key, `x5t` against its thumbprint,
//!   `aud` = this endpoint, `iss` = `sub` = the client id);
//! - JWT-bearer (signature checked with the service account's public key,
//!   `iss` = the account, `aud` = this endpoint, the IMAP scope, `sub` = the
//!   mailbox the token is for).
//!
//! It mints JWTs the test Dovecot accepts (HS256 with its key, `email` = the
//! mailbox, `aud` = the resource of the requested scope). Dovecot checks that
//! `email` equals the login name, so app-only tokens (which name no mailbox)
//! carry `app_mailbox`: the one mailbox the test opens with them.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

/// How the next minted token is spoiled (a queue; then valid tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mint {
    Valid,
    /// Already expired, though the answer says it lives an hour.
    Expired,
}

/// What the endpoint knows of its clients.
#[derive(Debug, Clone)]
pub struct Clients {
    pub client_id: String,
    pub client_secret: String,
    /// The app certificate's public key (PEM) and SHA-1 thumbprint (hex).
    pub certificate: Option<(String, String)>,
    /// The service account's address and public key (PEM).
    pub service_account: Option<(String, String)>,
    /// The mailbox app-only tokens are bound to (see the module comment).
    pub app_mailbox: String,
    /// Dovecot's HS256 validation key.
    pub dovecot_key: Vec<u8>,
    /// The users a service account may act as (empty: any), as a domain's
    /// directory would answer.
    pub users: Vec<String>,
}

#[derive(Default)]
struct State {
    plan: VecDeque<Mint>,
    /// One line per answered request: `grant mailbox` or `refused reason`.
    log: Vec<String>,
}

pub struct TokenEndpoint {
    pub port: u16,
    state: Arc<Mutex<State>>,
    running: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenEndpoint {
    pub fn start(clients: Clients) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("token endpoint port");
        let port = listener.local_addr().expect("address").port();
        listener.set_nonblocking(true).expect("non-blocking");
        let state = Arc::new(Mutex::new(State::default()));
        let running = Arc::new(AtomicBool::new(true));
        let (s, r) = (state.clone(), running.clone());
        let thread = std::thread::spawn(move || {
            while r.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => serve(stream, port, &clients, &s),
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Self {
            port,
            state,
            running,
            thread: Some(thread),
        }
    }

    /// The token URL (any path works; the assertions' `aud` must name it).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Spoils the next tokens as listed.
    pub fn plan(&self, mints: &[Mint]) {
        self.state.lock().expect("lock").plan.extend(mints);
    }

    pub fn log(&self) -> Vec<String> {
        self.state.lock().expect("lock").log.clone()
    }
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        self.running.store(false, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(stream: TcpStream, port: u16, clients: &Clients, state: &Mutex<State>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Some((path, body)) = read_request(&stream) else {
        return;
    };
    let form = parse_form(&body);
    let url = format!("http://127.0.0.1:{port}{path}");
    let (status, answer, line) = match answer(&form, &url, clients, state) {
        Ok((token, line)) => (
            "200 OK",
            serde_json::json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600}),
            line,
        ),
        Err(reason) => (
            "400 Bad Request",
            serde_json::json!({"error": "invalid_grant", "error_description": reason}),
            format!("refused {reason}"),
        ),
    };
    state.lock().expect("lock").log.push(line);
    let body = answer.to_string();
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
}

fn read_request(stream: &TcpStream) -> Option<(String, Vec<u8>)> {
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first).ok()?;
    let path = first.split_whitespace().nth(1)?.to_string();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((path, body))
}

fn parse_form(body: &[u8]) -> HashMap<String, String> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// The minted token and the log line, or why the request is refused.
fn answer(
    form: &HashMap<String, String>,
    url: &str,
    clients: &Clients,
    state: &Mutex<State>,
) -> Result<(String, String), String> {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    let (grant, mailbox, scope) = match field("grant_type") {
        "client_credentials" => {
            if field("client_id") != clients.client_id {
                return Err("unknown client".into());
            }
            let grant = if form.contains_key("client_assertion") {
                check_assertion(field("client_assertion"), url, clients)?;
                "client_assertion"
            } else if field("client_secret") == clients.client_secret {
                "client_secret"
            } else {
                return Err("wrong client secret".into());
            };
            (
                grant,
                clients.app_mailbox.clone(),
                field("scope").to_string(),
            )
        }
        "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
            let (sub, scope) = check_delegation(field("assertion"), url, clients)?;
            if !clients.users.is_empty() && !clients.users.contains(&sub) {
                return Err("Invalid email or User ID".into());
            }
            ("jwt_bearer", sub, scope)
        }
        other => return Err(format!("unsupported grant_type {other:?}")),
    };
    let mint = state
        .lock()
        .expect("lock")
        .plan
        .pop_front()
        .unwrap_or(Mint::Valid);
    let token = mint_token(&clients.dovecot_key, &mailbox, &scope, mint);
    Ok((token, format!("{grant} {mailbox}")))
}

fn check_assertion(assertion: &str, url: &str, clients: &Clients) -> Result<(), String> {
    let (public, thumbprint) = clients
        .certificate
        .as_ref()
        .ok_or("no certificate registered")?;
    let header = jsonwebtoken::decode_header(assertion).map_err(|e| e.to_string())?;
    if header.x5t.as_deref() != Some(x5t(thumbprint).as_str()) {
        return Err(format!(
            "x5t {:?} names no registered certificate",
            header.x5t
        ));
    }
    let claims = verify(assertion, public, url, &clients.client_id)?;
    if claims["sub"] != clients.client_id.as_str() {
        return Err("assertion sub is not the client".into());
    }
    Ok(())
}

/// The assertion's `sub` and `scope`.
fn check_delegation(
    assertion: &str,
    url: &str,
    clients: &Clients,
) -> Result<(String, String), String> {
    let (account, public) = clients
        .service_account
        .as_ref()
        .ok_or("no service account")?;
    let claims = verify(assertion, public, url, account)?;
    let sub = claims["sub"].as_str().ok_or("assertion without sub")?;
    let scope = claims["scope"].as_str().ok_or("assertion without scope")?;
    Ok((sub.to_string(), scope.to_string()))
}

fn verify(
    token: &str,
    public_pem: &str,
    audience: &str,
    issuer: &str,
) -> Result<serde_json::Value, String> {
    let key = DecodingKey::from_rsa_pem(public_pem.as_bytes()).map_err(|e| e.to_string())?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[issuer]);
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|e| format!("assertion refused: {e}"))
}

/// A token for the mailbox, whose audience is the resource of the scope
/// (`https://outlook.office365.com/.default` -> `https://outlook.office365.com`).
fn mint_token(key: &[u8], mailbox: &str, scope: &str, mint: Mint) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let audience = scope.trim_end_matches("/.default").trim_end_matches('/');
    let (iat, exp) = match mint {
        Mint::Valid => (now - 10, now + 3600),
        Mint::Expired => (now - 3700, now - 100),
    };
    let claims = serde_json::json!({
        "sub": mailbox, "email": mailbox, "aud": audience, "iat": iat, "exp": exp,
    });
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(key),
    )
    .expect("HS256 signing")
}

fn x5t(thumbprint_hex: &str) -> String {
    use base64::Engine;
    let bytes = hex::decode(thumbprint_hex.replace(':', "")).expect("hex thumbprint");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An RSA key and a self-signed certificate made by openssl: the private
/// key (PEM), the public key (PEM) and the certificate's SHA-1 thumbprint.
pub struct KeyPair {
    pub private_pem: String,
    pub public_pem: String,
    pub thumbprint: String,
}

pub fn key_pair(dir: &std::path::Path, name: &str) -> KeyPair {
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.crt"));
    let run = |args: &[&std::ffi::OsStr]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    run(&[
        &os("req"),
        &os("-x509"),
        &os("-newkey"),
        &os("rsa:2048"),
        &os("-nodes"),
        &os("-days"),
        &os("2"),
        &os("-subj"),
        &os(&format!("/CN={name}")),
        &os("-keyout"),
        key.as_os_str(),
        &os("-out"),
        cert.as_os_str(),
    ]);
    let public_pem = run(&[
        &os("x509"),
        &os("-in"),
        cert.as_os_str(),
        &os("-pubkey"),
        &os("-noout"),
    ]);
    let fingerprint = run(&[
        &os("x509"),
        &os("-in"),
        cert.as_os_str(),
        &os("-fingerprint"),
        &os("-sha1"),
        &os("-noout"),
    ]);
    let thumbprint = fingerprint
        .split('=')
        .nth(1)
        .expect("fingerprint line")
        .trim()
        .replace(':', "");
    KeyPair {
        private_pem: std::fs::read_to_string(&key).expect("key file"),
        public_pem,
        thumbprint,
    }
}
