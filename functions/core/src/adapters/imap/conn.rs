//! One IMAP connection: TCP, TLS (rustls), login, then a command/response
//! wire on async-imap's response parser.
//!
//! Why commands are written by hand instead of through `async_imap::Session`:
//! - pipelining: the session API waits for each command's completion, the
//!   whole point of the sink is to keep many APPENDs in flight;
//! - secrets: async-imap traces every command it encodes (LOGIN included) at
//!   `trace` level; our writes go straight to the socket, so no log level
//!   can reveal a password or a token;
//! - the greeting, login and NAMESPACE are read as plain lines before the
//!   parser takes over, because imap-proto 0.17 has no NAMESPACE response
//!   (an unparsable line would wedge its stream).
//!
//! Everything the server sends after login goes through
//! `async_imap::Client::read_response`, i.e. async-imap's framing (literals
//! included) and imap-proto's parser.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_imap::imap_proto::{MailboxDatum, Response, ResponseCode, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;

use super::names::{self, Namespace};

/// Why a step failed, as the sink needs to tell it apart.
#[derive(Debug)]
pub enum Failure {
    /// The connection broke, timed out or could not be opened: reconnecting
    /// may help.
    Transport(String),
    /// The server refused the login. `code` is the response code
    /// (`AUTHORIZATIONFAILED`: the admin may not open this mailbox, or it
    /// does not exist; `AUTHENTICATIONFAILED`: the credential itself).
    LoginRefused { code: Option<String>, text: String },
    /// Nothing will change by retrying: untrusted certificate, protocol
    /// error, a server without what the sink needs.
    Fatal(String),
    /// The folder cannot be used in this mailbox (bad name, CREATE or SELECT
    /// refused): the mailbox's messages fail, the rest goes on.
    Folder(String),
    /// An error of the library (secrets, configuration) met on the way.
    Crate(crate::error::Error),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Transport(reason) | Failure::Fatal(reason) | Failure::Folder(reason) => {
                f.write_str(reason)
            }
            Failure::Crate(e) => write!(f, "{e}"),
            Failure::LoginRefused { text, .. } => write!(f, "login refused: {text}"),
        }
    }
}

fn io_failure(what: &str, e: io::Error) -> Failure {
    Failure::Transport(format!("{what}: {e}"))
}

/// TCP, or TLS over TCP.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Plain(_) => "Transport::Plain",
            Transport::Tls(_) => "Transport::Tls",
        })
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Buffered so that a pipelined burst of commands leaves in few TLS records.
pub type Stream = BufWriter<Transport>;

/// Where and how to connect.
#[derive(Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// `None`: plaintext (only with the loudly named configuration flag).
    pub tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    pub timeout: Duration,
}

impl Endpoint {
    pub fn describe(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// How to log in, with the secret already at hand.
pub enum Login<'a> {
    /// `LOGIN user password`.
    Plain { user: String, password: &'a str },
    /// `AUTHENTICATE PLAIN` with an authorization identity (proxy login).
    SaslPlain {
        authzid: &'a str,
        authcid: &'a str,
        password: &'a str,
    },
    /// `AUTHENTICATE XOAUTH2` with a bearer token.
    XOAuth2 { user: &'a str, token: &'a str },
}

/// Opens TCP and, unless plaintext was asked for, TLS.
pub async fn connect(endpoint: &Endpoint) -> Result<Stream, Failure> {
    let address = endpoint.describe();
    let tcp = tokio::time::timeout(
        endpoint.timeout,
        TcpStream::connect((endpoint.host.as_str(), endpoint.port)),
    )
    .await
    .map_err(|_| Failure::Transport(format!("connecting to {address}: timed out")))?
    .map_err(|e| io_failure(&format!("connecting to {address}"), e))?;
    let _ = tcp.set_nodelay(true);
    let transport = match &endpoint.tls {
        None => Transport::Plain(tcp),
        Some((config, server_name)) => {
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            let tls = tokio::time::timeout(
                endpoint.timeout,
                connector.connect(server_name.clone(), tcp),
            )
            .await
            .map_err(|_| Failure::Transport(format!("TLS handshake with {address}: timed out")))?
            .map_err(|e| tls_failure(&address, e))?;
            Transport::Tls(Box::new(tls))
        }
    };
    Ok(BufWriter::with_capacity(64 * 1024, transport))
}

/// Certificate problems are fatal and say what to do; anything else during
/// the handshake is a transport failure.
fn tls_failure(address: &str, e: io::Error) -> Failure {
    let certificate = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|tls| match tls {
            rustls::Error::InvalidCertificate(reason) => Some(format!("{reason:?}")),
            _ => None,
        });
    match certificate {
        Some(reason) => Failure::Fatal(format!(
            "TLS: the server's certificate is not trusted ({reason}); the sink trusts the system \
             roots, or only the CA(s) in imap.ca_file when it is set"
        )),
        None => Failure::Transport(format!("TLS handshake with {address}: {e}")),
    }
}

/// Reads CRLF-terminated lines before the response parser takes over. The
/// server sends nothing unasked between our commands, so the buffer is empty
/// whenever a tagged completion has been read.
struct Lines<'s> {
    stream: &'s mut Stream,
    buf: Vec<u8>,
    timeout: Duration,
}

impl Lines<'_> {
    async fn line(&mut self) -> Result<String, Failure> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).take(end).collect();
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            if self.buf.len() > 1 << 20 {
                return Err(Failure::Fatal("IMAP server sent a line over 1 MiB".into()));
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(self.timeout, self.stream.read(&mut chunk))
                .await
                .map_err(|_| Failure::Transport("IMAP server did not answer in time".into()))?
                .map_err(|e| io_failure("reading from IMAP server", e))?;
            if read == 0 {
                return Err(Failure::Transport(
                    "IMAP server closed the connection".into(),
                ));
            }
            self.buf.extend_from_slice(&chunk[..read]);
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        tokio::time::timeout(self.timeout, write)
            .await
            .map_err(|_| Failure::Transport("writing to IMAP server timed out".into()))?
            .map_err(|e| io_failure("writing to IMAP server", e))
    }
}

/// What the server said about itself during login.
#[derive(Debug, Clone, Default)]
pub struct ServerInfo {
    pub capabilities: HashSet<String>,
    pub namespace: Option<Namespace>,
}

impl ServerInfo {
    pub fn has(&self, capability: &str) -> bool {
        self.capabilities.contains(&capability.to_ascii_uppercase())
    }

    /// APPENDLIMIT=n (RFC 7889), when announced for every mailbox.
    pub fn append_limit(&self) -> Option<u64> {
        self.capabilities
            .iter()
            .find_map(|c| c.strip_prefix("APPENDLIMIT=")?.parse().ok())
    }

    fn absorb_capabilities(&mut self, text: &str) {
        self.capabilities = text
            .split_ascii_whitespace()
            .map(str::to_ascii_uppercase)
            .collect();
    }

    /// Takes `[CAPABILITY ...]` out of a status text, when present.
    fn absorb_code(&mut self, text: &str) {
        if let Some(rest) = text.strip_prefix("[CAPABILITY ") {
            if let Some(end) = rest.find(']') {
                self.absorb_capabilities(&rest[..end]);
            }
        }
    }
}

/// Greeting, capabilities, login and namespace, as plain lines.
async fn handshake(
    stream: &mut Stream,
    login: &Login<'_>,
    timeout: Duration,
) -> Result<ServerInfo, Failure> {
    let mut lines = Lines {
        stream,
        buf: Vec::new(),
        timeout,
    };
    let mut info = ServerInfo::default();
    let greeting = lines.line().await?;
    match greeting.split_ascii_whitespace().nth(1) {
        Some(s) if s.eq_ignore_ascii_case("OK") => {}
        Some(s) if s.eq_ignore_ascii_case("PREAUTH") => {
            return Err(Failure::Fatal(
                "IMAP server pre-authenticated the connection; the sink needs to log in as each mailbox".into(),
            ))
        }
        _ => {
            return Err(Failure::Transport(format!(
                "IMAP server refused the connection: {greeting}"
            )))
        }
    }
    let (_, rest) = names::split_status(&greeting);
    info.absorb_code(&rest);
    if info.capabilities.is_empty() {
        simple_command(&mut lines, "H0 CAPABILITY", &mut info).await?;
    }

    let status = authenticate(&mut lines, login, &info).await?;
    let (status, text) = status;
    if status != "OK" {
        let code = names::response_code(&text);
        return Err(match status.as_str() {
            "NO" => Failure::LoginRefused { code, text },
            _ => Failure::Fatal(format!("IMAP server rejected the login command: {text}")),
        });
    }
    // Capabilities change after login (Dovecot adds MULTIAPPEND, UIDPLUS...).
    let before = info.capabilities.clone();
    info.absorb_code(&text);
    if info.capabilities == before {
        simple_command(&mut lines, "H2 CAPABILITY", &mut info).await?;
    }
    if info.has("NAMESPACE") {
        simple_command(&mut lines, "H3 NAMESPACE", &mut info).await?;
    }
    if !lines.buf.is_empty() {
        return Err(Failure::Fatal(
            "IMAP server sent data nobody asked for during login".into(),
        ));
    }
    Ok(info)
}

/// Sends a command without arguments and reads up to its completion,
/// collecting CAPABILITY and NAMESPACE data.
async fn simple_command(
    lines: &mut Lines<'_>,
    command: &str,
    info: &mut ServerInfo,
) -> Result<(), Failure> {
    let tag = command.split(' ').next().unwrap_or_default();
    lines.send(format!("{command}\r\n").as_bytes()).await?;
    loop {
        let line = lines.line().await?;
        if let Some(caps) = line.strip_prefix("* CAPABILITY ") {
            info.absorb_capabilities(caps);
        } else if line.starts_with("* NAMESPACE ") {
            info.namespace = names::parse_namespace_line(&line);
        } else if line.starts_with(&format!("{tag} ")) {
            let (status, text) = names::split_status(&line);
            if status != "OK" && !command.ends_with("NAMESPACE") {
                return Err(Failure::Fatal(format!("{command}: {text}")));
            }
            return Ok(());
        }
    }
}

/// Runs the login exchange; returns the tagged status and its text. The
/// secret goes to the socket only, never into a string that could be logged
/// or returned.
async fn authenticate(
    lines: &mut Lines<'_>,
    login: &Login<'_>,
    info: &ServerInfo,
) -> Result<(String, String), Failure> {
    use base64::Engine;
    const TAG: &str = "H1";
    let sasl = |mechanism: &str, payload: Vec<u8>| {
        (
            mechanism.to_string(),
            base64::engine::general_purpose::STANDARD.encode(payload),
        )
    };
    let (mechanism, payload) = match login {
        Login::Plain { user, password } => {
            if info.has("LOGINDISABLED") {
                return Err(Failure::Fatal(
                    "IMAP server disables LOGIN on this connection (use TLS)".into(),
                ));
            }
            return login_command(lines, user, password).await;
        }
        Login::SaslPlain {
            authzid,
            authcid,
            password,
        } => sasl(
            "PLAIN",
            [authzid.as_bytes(), authcid.as_bytes(), password.as_bytes()].join(&0u8),
        ),
        Login::XOAuth2 { user, token } => sasl(
            "XOAUTH2",
            format!("user={user}\x01auth=Bearer {token}\x01\x01").into_bytes(),
        ),
    };
    if !info.has(&format!("AUTH={mechanism}")) {
        return Err(Failure::Fatal(format!(
            "IMAP server does not offer AUTH={mechanism}"
        )));
    }
    if info.has("SASL-IR") {
        lines
            .send(format!("{TAG} AUTHENTICATE {mechanism} {payload}\r\n").as_bytes())
            .await?;
    } else {
        lines
            .send(format!("{TAG} AUTHENTICATE {mechanism}\r\n").as_bytes())
            .await?;
        let line = lines.line().await?;
        if !line.starts_with('+') {
            return Ok(names::split_status(&line));
        }
        lines.send(format!("{payload}\r\n").as_bytes()).await?;
    }
    loop {
        let line = lines.line().await?;
        if line.starts_with('+') {
            // XOAUTH2 answers a refused token with an error challenge that
            // must be acknowledged by an empty response before the NO.
            lines.send(b"\r\n").await?;
        } else if line.starts_with(&format!("{TAG} ")) {
            return Ok(names::split_status(&line));
        }
    }
}

async fn login_command(
    lines: &mut Lines<'_>,
    user: &str,
    password: &str,
) -> Result<(String, String), Failure> {
    const TAG: &str = "H1";
    let user = names::quoted(user)
        .ok_or_else(|| Failure::Fatal("login name holds characters IMAP cannot quote".into()))?;
    match names::quoted(password) {
        Some(password) => {
            lines
                .send(format!("{TAG} LOGIN {user} {password}\r\n").as_bytes())
                .await?;
        }
        None => {
            // A literal carries any password; wait for the continuation.
            lines
                .send(format!("{TAG} LOGIN {user} {{{}}}\r\n", password.len()).as_bytes())
                .await?;
            let line = lines.line().await?;
            if !line.starts_with('+') {
                return Ok(names::split_status(&line));
            }
            let mut bytes = password.as_bytes().to_vec();
            bytes.extend_from_slice(b"\r\n");
            lines.send(&bytes).await?;
        }
    }
    loop {
        let line = lines.line().await?;
        if line.starts_with(&format!("{TAG} ")) {
            return Ok(names::split_status(&line));
        }
    }
}

/// A completed command.
#[derive(Debug, Clone)]
pub struct Done {
    pub tag: String,
    pub status: DoneStatus,
    /// `[CODE] text` as the server wrote it (unknown codes stay in the text).
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoneStatus {
    Ok,
    No,
    Bad,
}

/// What untagged data the sink cares about.
#[derive(Debug, Clone)]
pub enum Untagged {
    Exists(u32),
    UidValidity(u32),
    /// A FETCH: UID and the first body section.
    Fetch {
        uid: Option<u32>,
        section: Option<Vec<u8>>,
    },
    List {
        delimiter: Option<String>,
    },
    Bye(String),
    Other,
}

/// Either half of a response.
pub enum Event {
    Continue,
    Done(Done),
    Untagged(Untagged),
}

fn render_code(code: &ResponseCode<'_>) -> String {
    match code {
        ResponseCode::Alert => "[ALERT] ".into(),
        ResponseCode::TryCreate => "[TRYCREATE] ".into(),
        ResponseCode::ReadOnly => "[READ-ONLY] ".into(),
        ResponseCode::Parse => "[PARSE] ".into(),
        _ => String::new(),
    }
}

fn event(response: &Response<'_>) -> Event {
    use async_imap::imap_proto::AttributeValue;
    match response {
        Response::Continue(_) => Event::Continue,
        Response::Done {
            tag,
            status,
            outcome,
        } => {
            let status = match status {
                Status::Ok => DoneStatus::Ok,
                Status::No => DoneStatus::No,
                _ => DoneStatus::Bad,
            };
            let text = format!(
                "{}{}",
                outcome.code.as_ref().map(render_code).unwrap_or_default(),
                outcome.information.as_deref().unwrap_or("")
            );
            Event::Done(Done {
                tag: tag.0.clone(),
                status,
                text,
            })
        }
        Response::Data { status, outcome } => Event::Untagged(match (status, &outcome.code) {
            (Status::Bye, _) => Untagged::Bye(outcome.information.as_deref().unwrap_or("").into()),
            (_, Some(ResponseCode::UidValidity(v))) => Untagged::UidValidity(*v),
            _ => Untagged::Other,
        }),
        Response::MailboxData(MailboxDatum::Exists(n)) => Event::Untagged(Untagged::Exists(*n)),
        Response::MailboxData(MailboxDatum::List(list)) => Event::Untagged(Untagged::List {
            delimiter: list.delimiter.as_deref().map(str::to_string),
        }),
        Response::Fetch(_, attributes) => {
            let mut uid = None;
            let mut section = None;
            for attribute in attributes {
                match attribute {
                    AttributeValue::Uid(u) => uid = Some(*u),
                    AttributeValue::BodySection { data, .. } => {
                        section = Some(data.as_deref().unwrap_or_default().to_vec())
                    }
                    AttributeValue::Rfc822Header(data) => {
                        section = Some(data.as_deref().unwrap_or_default().to_vec())
                    }
                    _ => {}
                }
            }
            Event::Untagged(Untagged::Fetch { uid, section })
        }
        _ => Event::Untagged(Untagged::Other),
    }
}

/// A logged-in connection: commands written by hand, responses parsed by
/// async-imap.
pub struct Wire {
    client: async_imap::Client<Stream>,
    next_tag: u64,
    timeout: Duration,
    pub info: ServerInfo,
    pub address: String,
}

impl Wire {
    /// Connects and logs in.
    pub async fn open(endpoint: &Endpoint, login: &Login<'_>) -> Result<Self, Failure> {
        let mut stream = connect(endpoint).await?;
        let info = handshake(&mut stream, login, endpoint.timeout).await?;
        Ok(Self {
            client: async_imap::Client::new(stream),
            next_tag: 0,
            timeout: endpoint.timeout,
            info,
            address: endpoint.describe(),
        })
    }

    pub fn tag(&mut self) -> String {
        self.next_tag += 1;
        format!("S{}", self.next_tag)
    }

    /// Queues bytes (sent at the next flush or when the buffer fills).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        tokio::time::timeout(self.timeout, self.client.get_mut().write_all(bytes))
            .await
            .map_err(|_| Failure::Transport(format!("writing to {} timed out", self.address)))?
            .map_err(|e| io_failure(&format!("writing to {}", self.address), e))
    }

    pub async fn flush(&mut self) -> Result<(), Failure> {
        tokio::time::timeout(self.timeout, self.client.get_mut().flush())
            .await
            .map_err(|_| Failure::Transport(format!("writing to {} timed out", self.address)))?
            .map_err(|e| io_failure(&format!("writing to {}", self.address), e))
    }

    /// The next response (flush first: the server may be waiting for us).
    pub async fn read(&mut self) -> Result<Event, Failure> {
        let response = tokio::time::timeout(self.timeout, self.client.read_response())
            .await
            .map_err(|_| Failure::Transport(format!("{} did not answer in time", self.address)))?
            .map_err(|e| io_failure(&format!("reading from {}", self.address), e))?
            .ok_or_else(|| Failure::Transport(format!("{} closed the connection", self.address)))?;
        Ok(event(response.parsed()))
    }

    /// Sends commands back to back and reads until all are complete:
    /// untagged data of all of them, then their completions in order.
    pub async fn commands(
        &mut self,
        commands: &[String],
    ) -> Result<(Vec<Untagged>, Vec<Done>), Failure> {
        let mut tags = Vec::with_capacity(commands.len());
        for command in commands {
            let tag = self.tag();
            self.write(format!("{tag} {command}\r\n").as_bytes())
                .await?;
            tags.push(tag);
        }
        self.flush().await?;
        let mut untagged = Vec::new();
        let mut done: Vec<Option<Done>> = vec![None; tags.len()];
        while done.iter().any(Option::is_none) {
            match self.read().await? {
                Event::Done(d) => match tags.iter().position(|t| *t == d.tag) {
                    Some(i) => done[i] = Some(d),
                    None => {
                        return Err(Failure::Fatal(format!(
                            "IMAP server completed an unknown command {}",
                            d.tag
                        )))
                    }
                },
                Event::Untagged(Untagged::Bye(text)) => {
                    return Err(Failure::Transport(format!(
                        "{} is closing the connection: {text}",
                        self.address
                    )))
                }
                Event::Untagged(u) => untagged.push(u),
                Event::Continue => {
                    return Err(Failure::Fatal(
                        "IMAP server asked for a literal nobody sent".into(),
                    ))
                }
            }
        }
        Ok((untagged, done.into_iter().flatten().collect()))
    }

    /// One command; its untagged data and completion.
    pub async fn command(&mut self, command: &str) -> Result<(Vec<Untagged>, Done), Failure> {
        let (untagged, mut done) = self.commands(&[command.to_string()]).await?;
        let done = done
            .pop()
            .ok_or_else(|| Failure::Fatal("command without completion".into()))?;
        Ok((untagged, done))
    }

    /// Best effort: says goodbye without waiting long.
    pub async fn logout(mut self) {
        let tag = self.tag();
        let bye = async {
            self.write(format!("{tag} LOGOUT\r\n").as_bytes()).await?;
            self.flush().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), bye).await;
    }
}
