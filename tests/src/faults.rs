//! Fault injection: what the tests in `tests/tests/faults.rs` break things
//! with, and the invariant they check afterwards.
//!
//! - [`Relay`]: a TCP relay in front of a server that the test stops and
//!   starts again on the same port. While stopped the port refuses
//!   connections and every open connection is cut, which is all a client
//!   sees of a stopped server, while the server behind it keeps its state.
//! - [`signal`]: signals to a process by its PID (SIGSTOP/SIGCONT: a server
//!   that hangs and comes back).
//! - [`HookStore`]: an object store that calls a hook before every operation
//!   (and as a written body streams), so a fault is injected at an exact
//!   point of a stage, not after a guessed delay.
//! - [`outage`], [`OutageSink`]: a store hook and a mailbox sink that fail
//!   every operation, as an unreachable S3 or mail server does, while their
//!   switch is on (a [`HookStore`] hook or a delivery count turns it on).
//! - [`Rng`]: a small deterministic PRNG; a seed reproduces a run.
//! - [`CliRun`], [`run_killed_at`]: the operator's `chat-archive run` as a
//!   child process, killed with SIGKILL once it has written so much.
//! - [`evidence`]: the SHA-256 of every evidence object, to prove that
//!   nothing written was ever changed.
//! - [`corpus`]: ICE exports over several days whose outcome is known in
//!   advance (which mailboxes get which conversation, which fail), and
//!   [`assert_each_conversation_once`], the invariant: every conversation is
//!   in each of its mailboxes exactly once (whole), every other one is
//!   reported failed with a reason, and the status counts add up.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use chat_archive_core::ports::{
    ByteStream, Delivery, DeliveryOutcome, MailboxSink, Metadata, ObjectInfo, ObjectStore,
};
use chat_archive_core::status::DayStatus;
use chat_archive_core::{Error, Result};
use sha2::Digest as _;
use tokio::io::{AsyncRead, ReadBuf};

// ---------------------------------------------------------------------------
// A deterministic PRNG (SplitMix64).

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo)
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// The seeds of the randomised fault tests: `FAULT_SEEDS=3,7` runs those
/// (to reproduce a failure), else `default`.
pub fn seeds(default: &[u64]) -> Vec<u64> {
    match std::env::var("FAULT_SEEDS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("FAULT_SEEDS: not a number: {s:?}"))
            })
            .collect(),
        _ => default.to_vec(),
    }
}

// ---------------------------------------------------------------------------
// Signals by PID.

/// Sends a signal (`STOP`, `CONT`, `KILL`...) to one process, by its PID.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Sends SIGCONT to a process when dropped: a server stopped with SIGSTOP
/// comes back even when the test fails half-way.
pub struct Resume(pub u32);

impl Drop for Resume {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

// ---------------------------------------------------------------------------
// A TCP relay that can be stopped and started again.

/// Rewrites a line the server sends (CRLF included); `None` leaves it.
pub type LineRewrite = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

struct RelayShared {
    running: AtomicBool,
    /// While set, bytes are held instead of passed on (both directions):
    /// a server that accepted the connection and stopped answering.
    held: AtomicBool,
    /// Applied to every line from the upstream (a line-based protocol).
    rewrite: Option<LineRewrite>,
    /// Both ends of every relayed connection, to cut them on stop.
    connections: Mutex<Vec<TcpStream>>,
}

pub struct Relay {
    pub port: u16,
    upstream: SocketAddr,
    shared: Arc<RelayShared>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// A relay on a free loopback port to `127.0.0.1:upstream_port`.
    pub fn start(upstream_port: u16) -> Self {
        Self::start_with(upstream_port, None)
    }

    /// A relay that passes each line the upstream sends through `rewrite`
    /// (to inject answers a server gives only under load).
    pub fn start_rewriting(upstream_port: u16, rewrite: LineRewrite) -> Self {
        Self::start_with(upstream_port, Some(rewrite))
    }

    fn start_with(upstream_port: u16, rewrite: Option<LineRewrite>) -> Self {
        let upstream: SocketAddr = ([127, 0, 0, 1], upstream_port).into();
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay port");
        let port = listener.local_addr().expect("relay address").port();
        let mut relay = Self {
            port,
            upstream,
            shared: Arc::new(RelayShared {
                running: AtomicBool::new(false),
                held: AtomicBool::new(false),
                rewrite,
                connections: Mutex::new(Vec::new()),
            }),
            acceptor: None,
        };
        relay.serve(listener);
        relay
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.acceptor.is_some()
    }

    fn serve(&mut self, listener: TcpListener) {
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        self.shared.running.store(true, Ordering::SeqCst);
        let shared = self.shared.clone();
        let upstream = self.upstream;
        self.acceptor = Some(std::thread::spawn(move || {
            while shared.running.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => relay_connection(&shared, client, upstream),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            // The listener is dropped here: the port refuses connections.
        }));
    }

    /// Stops the relay: the port refuses connections, every open
    /// connection is cut.
    pub fn stop(&mut self) {
        let Some(acceptor) = self.acceptor.take() else {
            return;
        };
        self.shared.running.store(false, Ordering::SeqCst);
        let _ = acceptor.join();
        let mut connections = self.shared.connections.lock().expect("relay lock");
        for stream in connections.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Holds every byte in both directions from now on: connections stay
    /// open and new ones are accepted, but nothing answers (a hung server,
    /// not a stopped one).
    pub fn hold(&self) {
        self.shared.held.store(true, Ordering::SeqCst);
    }

    /// Passes the held bytes on and goes on relaying.
    pub fn release(&self) {
        self.shared.held.store(false, Ordering::SeqCst);
    }

    /// Listens again on the same port.
    pub fn resume(&mut self) {
        if self.is_running() {
            return;
        }
        for _ in 0..200 {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(listener) => return self.serve(listener),
                Err(_) => std::thread::sleep(Duration::from_millis(25)),
            }
        }
        panic!("the relay could not listen on port {} again", self.port);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

fn relay_connection(shared: &Arc<RelayShared>, client: TcpStream, upstream: SocketAddr) {
    let _ = client.set_nonblocking(false);
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    {
        let mut connections = shared.connections.lock().expect("relay lock");
        for stream in [&client, &server] {
            if let Ok(clone) = stream.try_clone() {
                connections.push(clone);
            }
        }
    }
    let rewrite = shared.rewrite.clone();
    for (from, mut to, rewrite) in [(client, server2, None), (server, client2, rewrite)] {
        let shared = shared.clone();
        std::thread::spawn(move || match rewrite {
            Some(rewrite) => {
                let _ = copy_lines(from, &mut to, &rewrite);
                let _ = to.shutdown(Shutdown::Write);
            }
            None => pass_on(&shared, from, to),
        });
    }
}

/// Copies one direction of a relayed connection, holding the bytes while
/// the relay is held.
fn pass_on(shared: &RelayShared, mut from: TcpStream, mut to: TcpStream) {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while shared.held.load(Ordering::SeqCst) && shared.running.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Copies line by line, rewriting the lines that are text.
fn copy_lines(from: TcpStream, to: &mut TcpStream, rewrite: &LineRewrite) -> std::io::Result<()> {
    use std::io::{BufRead, Write};
    let mut reader = std::io::BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let replaced = std::str::from_utf8(&line)
            .ok()
            .and_then(|text| rewrite(text));
        match replaced {
            Some(text) => to.write_all(text.as_bytes())?,
            None => to.write_all(&line)?,
        }
    }
}

// ---------------------------------------------------------------------------
// An object store with a hook.

/// An operation on the store, seen by a [`HookStore`]'s hook before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call<'a> {
    Get(&'a str),
    Head(&'a str),
    /// A write begins (before its body is read).
    Put(&'a str),
    /// A write's body has streamed this many bytes so far.
    Streamed(&'a str, u64),
    List(&'a str),
    Delete(&'a str),
}

impl Call<'_> {
    /// The key (or, for a listing, the prefix) the operation is on.
    pub fn key(&self) -> &str {
        match *self {
            Call::Get(key)
            | Call::Head(key)
            | Call::Put(key)
            | Call::Streamed(key, _)
            | Call::List(key)
            | Call::Delete(key) => key,
        }
    }
}

/// Sees each operation before it runs; an error fails the operation (and,
/// for [`Call::Streamed`], the write) without it reaching the inner store.
pub type Hook = Arc<dyn Fn(Call<'_>) -> Result<()> + Send + Sync>;
/// Stands between a write's body and the inner store (to hold or cut it).
pub type BodyWrap = Arc<dyn Fn(&str, ByteStream) -> ByteStream + Send + Sync>;

/// Calls its hook before every operation, then does it on the inner store.
pub struct HookStore {
    pub inner: Arc<dyn ObjectStore>,
    pub hook: Hook,
    wrap: Option<BodyWrap>,
}

impl HookStore {
    /// A hook that watches (and may panic, to stop the run right there).
    pub fn new(
        inner: Arc<dyn ObjectStore>,
        hook: impl Fn(Call<'_>) + Send + Sync + 'static,
    ) -> Self {
        Self::fallible(inner, move |call| {
            hook(call);
            Ok(())
        })
    }

    /// A hook that may fail the operation it sees.
    pub fn fallible(
        inner: Arc<dyn ObjectStore>,
        hook: impl Fn(Call<'_>) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        Self {
            inner,
            hook: Arc::new(hook),
            wrap: None,
        }
    }

    /// Every write's body passes through `wrap` on its way in.
    pub fn wrapping_bodies(
        mut self,
        wrap: impl Fn(&str, ByteStream) -> ByteStream + Send + Sync + 'static,
    ) -> Self {
        self.wrap = Some(Arc::new(wrap));
        self
    }
}

/// A hook under which the store fails every operation while `down` is set:
/// what a stage sees of an unreachable S3 (its writes never start, nothing
/// is changed).
pub fn outage(down: Arc<AtomicBool>) -> impl Fn(Call<'_>) -> Result<()> + Send + Sync + 'static {
    move |call| match down.load(Ordering::SeqCst) {
        true => Err(Error::store(
            call.key(),
            "connection refused (injected store outage)",
        )),
        false => Ok(()),
    }
}

struct Watched {
    inner: ByteStream,
    key: String,
    streamed: u64,
    hook: Hook,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        std::task::ready!(this.inner.as_mut().poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        if n > 0 {
            this.streamed += n as u64;
            (this.hook)(Call::Streamed(&this.key, this.streamed))
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        Poll::Ready(Ok(()))
    }
}

#[async_trait]
impl ObjectStore for HookStore {
    async fn get(&self, key: &str) -> Result<(ByteStream, ObjectInfo)> {
        (self.hook)(Call::Get(key))?;
        self.inner.get(key).await
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        (self.hook)(Call::Head(key))?;
        self.inner.head(key).await
    }
    async fn put(&self, key: &str, body: ByteStream, metadata: &Metadata) -> Result<ObjectInfo> {
        (self.hook)(Call::Put(key))?;
        let body = match &self.wrap {
            Some(wrap) => wrap(key, body),
            None => body,
        };
        let body: ByteStream = Box::pin(Watched {
            inner: body,
            key: key.to_string(),
            streamed: 0,
            hook: self.hook.clone(),
        });
        self.inner.put(key, body, metadata).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        (self.hook)(Call::List(prefix))?;
        self.inner.list(prefix).await
    }
    async fn list_children(&self, prefix: &str) -> Result<Vec<String>> {
        (self.hook)(Call::List(prefix))?;
        self.inner.list_children(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        (self.hook)(Call::Delete(key))?;
        self.inner.delete(key).await
    }
    async fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, String)>> {
        (self.hook)(Call::Get(key))?;
        self.inner.get_versioned(key).await
    }
    async fn put_if(
        &self,
        key: &str,
        bytes: Vec<u8>,
        metadata: &Metadata,
        expected: Option<&str>,
    ) -> Result<bool> {
        (self.hook)(Call::Put(key))?;
        self.inner.put_if(key, bytes, metadata, expected).await
    }
}

/// Runs `fault` once, at the `nth` (1-based) call that `matches`.
pub fn at_nth_call(
    nth: usize,
    matches: impl Fn(&Call<'_>) -> bool + Send + Sync + 'static,
    fault: impl Fn() + Send + Sync + 'static,
) -> impl Fn(Call<'_>) + Send + Sync + 'static {
    let seen = Mutex::new(0usize);
    move |call| {
        if !matches(&call) {
            return;
        }
        let mut seen = seen.lock().expect("hook lock");
        *seen += 1;
        if *seen == nth {
            fault();
        }
    }
}

// ---------------------------------------------------------------------------
// Outages: a store and a mailbox sink that fail while switched off.

/// A mailbox sink that goes down at its `down_at`-th delivery (1-based; 0:
/// never) and stays down: every call then fails as the IMAP sink fails when
/// its server refuses connections (a transport error, so the stage fails
/// and is retried; no message is refused for good).
pub struct OutageSink {
    pub inner: Arc<dyn MailboxSink>,
    pub down_at: usize,
    pub deliveries: AtomicUsize,
    pub down: AtomicBool,
}

impl OutageSink {
    pub fn new(inner: Arc<dyn MailboxSink>, down_at: usize) -> Self {
        Self {
            inner,
            down_at,
            deliveries: AtomicUsize::new(0),
            down: AtomicBool::new(false),
        }
    }

    fn check(&self) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::io(
                "IMAP server 127.0.0.1",
                std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "connection refused (injected mail server outage)",
                ),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl MailboxSink for OutageSink {
    async fn is_valid_mailbox(&self, mailbox: &str) -> Result<bool> {
        self.check()?;
        self.inner.is_valid_mailbox(mailbox).await
    }
    async fn deliver(&self, delivery: &Delivery<'_>) -> Result<DeliveryOutcome> {
        let n = self.deliveries.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.down_at {
            self.down.store(true, Ordering::SeqCst);
        }
        self.check()?;
        self.inner.deliver(delivery).await
    }
}

// ---------------------------------------------------------------------------
// Runs on copies of one data directory.

/// Copies a directory tree (a firm's pristine data directory, so that every
/// run starts from the same state).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// Files under a directory, recursively, skipping directories named in `skip`.
pub fn count_files(dir: &Path, skip: &[&str]) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| {
            let name = e.file_name();
            if skip.iter().any(|s| name == *s) {
                0
            } else if e.file_type().is_ok_and(|t| t.is_dir()) {
                count_files(&e.path(), skip)
            } else {
                1
            }
        })
        .sum()
}

/// SHA-256 of every evidence object (`raw/`, `plain/`, `mail/`,
/// `quarantine/`) of a local store, read from its files directly.
pub fn evidence(store_root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for prefix in ["raw", "plain", "mail", "quarantine"] {
        walk(&store_root.join(prefix), &mut |path| {
            let key = path
                .strip_prefix(store_root)
                .expect("under the store")
                .to_string_lossy()
                .into_owned();
            let bytes = std::fs::read(path).expect("object");
            out.insert(key, hex::encode(sha2::Sha256::digest(bytes)));
        });
    }
    out
}

/// Calls `visit` with every file under `dir`, recursively.
pub fn walk(dir: &Path, visit: &mut dyn FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, visit);
        } else {
            visit(&path);
        }
    }
}

// ---------------------------------------------------------------------------
// The operator's `chat-archive run` as a child process, killed mid-run.

/// A `chat-archive run` child process, killed by its PID if the test ends early.
pub struct CliRun(pub Child);

impl Drop for CliRun {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bin --data-dir DIR run`, its output into `DIR/LOG`.
pub fn start_run(bin: &Path, dir: &Path, log: &str) -> CliRun {
    let log = std::fs::File::create(dir.join(log)).expect("run log");
    CliRun(
        Command::new(bin)
            .arg("--data-dir")
            .arg(dir)
            .arg("run")
            .env_remove("CHAT_ARCHIVE_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("chat-archive starts"),
    )
}

/// What a run has written so far: objects in the store and messages in the
/// mailboxes (it only ever adds files, so this measures its progress).
pub fn work_done(dir: &Path) -> usize {
    count_files(&dir.join("store"), &[".meta", ".tmp"])
        + count_files(&dir.join("mailboxes"), &["tmp"])
}

/// Starts a run and kills it (SIGKILL, by its PID) once the data directory
/// holds `kill_at` files ([`work_done`]). Returns how many it held, or the
/// exit status if the run ended before.
pub fn run_killed_at(
    bin: &Path,
    dir: &Path,
    kill_at: usize,
) -> std::result::Result<usize, ExitStatus> {
    let mut run = start_run(bin, dir, "killed.log");
    loop {
        if let Some(status) = run.0.try_wait().expect("try_wait") {
            return Err(status);
        }
        let done = work_done(dir);
        if done >= kill_at {
            run.0.kill().expect("SIGKILL");
            run.0.wait().expect("wait");
            return Ok(done);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

// ---------------------------------------------------------------------------
// A corpus of exports whose outcome is known in advance.

pub const DOMAIN: &str = "acme.example";
/// The firm's provisioned mailboxes.
pub const MAILBOXES: [&str; 5] = [
    "ada@acme.example",
    "bob@acme.example",
    "cyd@acme.example",
    "dee@acme.example",
    "eve@acme.example",
];
/// Inside the firm's domain, but no such mailbox: never receives anything.
pub const GHOST: &str = "ghost@acme.example";
pub const FOLDER: &str = "ICE Chat";

#[derive(Debug, Clone)]
pub struct PlannedConversation {
    pub id: String,
    pub day: String,
    /// The mailboxes it must land in; empty: it must fail (user mapping).
    pub mailboxes: BTreeSet<String>,
}

#[derive(Debug, Clone)]
pub struct ExportFile {
    pub name: String,
    pub day: String,
    pub xml: String,
    pub conversations: Vec<PlannedConversation>,
}

/// The shape of a corpus.
#[derive(Debug, Clone, Copy)]
pub struct CorpusShape {
    pub files: usize,
    pub conversations_per_file: usize,
    pub messages_per_conversation: usize,
    /// A file transfer of this many random (incompressible) bytes in the
    /// first conversation of the last file, to make that file large.
    pub attachment_bytes: usize,
}

/// Exports of consecutive days from 2026-11-16, one file per day. Most
/// conversations have one to three firm users (and a counterparty of
/// another firm, and now and then a firm address without a mailbox); every
/// 11th has no one with a mailbox and must be reported failed.
pub fn corpus(shape: CorpusShape) -> Vec<ExportFile> {
    let mut rng = Rng::new(0x5EED);
    let mut files = Vec::new();
    let mut global = 0usize;
    for f in 0..shape.files {
        let day = format!("2026-11-{:02}", 16 + f);
        let mut xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<IceChatExport FirmCode=\"ACME\" ExportDate=\"{day}\" Version=\"1\">\n"
        );
        let mut conversations = Vec::new();
        for c in 0..shape.conversations_per_file {
            let g = global;
            global += 1;
            let id = format!("d{f}-c{c}");
            let mut people: Vec<(String, String)> = Vec::new();
            let mut mailboxes = BTreeSet::new();
            if g % 11 == 5 {
                people.push((format!("ext{g}"), format!("ext{g}@globex.example")));
                people.push(("ghost9".into(), GHOST.into()));
            } else {
                for j in 0..1 + g % 3 {
                    let mailbox = MAILBOXES[(g + j) % MAILBOXES.len()];
                    let user = mailbox.split('@').next().unwrap_or(mailbox);
                    people.push((format!("{user}1"), mailbox.to_string()));
                    mailboxes.insert(mailbox.to_string());
                }
                people.push((format!("ext{g}"), format!("ext{g}@globex.example")));
                if g.is_multiple_of(7) {
                    people.push(("ghost9".into(), GHOST.into()));
                }
            }
            let (h, m) = (8 + (c / 60) % 10, c % 60);
            xml.push_str(&format!(
                "  <Conversation Id=\"{id}\" Type=\"Group\" RoomName=\"Room {id}\" StartTime=\"{day}T{h:02}:{m:02}:00Z\">\n    <Participants>\n"
            ));
            for (im, email) in &people {
                xml.push_str(&format!(
                    "      <Participant ImId=\"{im}\" Name=\"User {im}\" Company=\"Co\" Email=\"{email}\"/>\n"
                ));
            }
            xml.push_str("    </Participants>\n");
            for i in 0..shape.messages_per_conversation {
                let (im, _) = &people[i % people.len()];
                xml.push_str(&format!(
                    "    <Message Id=\"m-{id}-{i}\" ImId=\"{im}\" Timestamp=\"{day}T{h:02}:{m:02}:{:02}Z\">Quote {i} in {id}: Bund 10y bid 2.41 offer 2.42, size {}m &amp; steady.</Message>\n",
                    i % 60,
                    5 + i
                ));
            }
            if c == 0 && f + 1 == shape.files && shape.attachment_bytes > 0 {
                let data = base64::engine::general_purpose::STANDARD
                    .encode(rng.bytes(shape.attachment_bytes));
                let (im, _) = &people[0];
                xml.push_str(&format!(
                    "    <FileTransfer Id=\"f-{id}\" ImId=\"{im}\" Timestamp=\"{day}T{h:02}:{m:02}:59Z\" FileName=\"blob.bin\" ContentType=\"application/octet-stream\" Size=\"{}\">{data}</FileTransfer>\n",
                    shape.attachment_bytes
                ));
            }
            xml.push_str("  </Conversation>\n");
            conversations.push(PlannedConversation {
                id,
                day: day.clone(),
                mailboxes,
            });
        }
        xml.push_str("</IceChatExport>\n");
        files.push(ExportFile {
            name: format!("ACME_{day}.xml.pgp"),
            day,
            xml,
            conversations,
        });
    }
    files
}

/// Mailbox -> the conversations it must hold.
pub fn expected_mailboxes(files: &[ExportFile]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for conversation in files.iter().flat_map(|f| &f.conversations) {
        for mailbox in &conversation.mailboxes {
            out.entry(mailbox.clone())
                .or_default()
                .insert(conversation.id.clone());
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The invariant.

/// One message file of a Maildir folder.
#[derive(Debug, Clone)]
pub struct StoredMail {
    pub file: PathBuf,
    pub message_id: String,
    pub conversation_id: String,
    pub day: String,
    pub raw: Vec<u8>,
}

fn header(message: &mail_parser::Message<'_>, name: &str) -> String {
    message
        .headers()
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
        .and_then(|h| h.value().as_text())
        .map(|t| t.trim().to_string())
        .unwrap_or_default()
}

/// Every message a mail client would see in a Maildir folder (`new/` and
/// `cur/`; `tmp/` holds deliveries in progress and is not part of it).
pub fn folder_mails(folder: &Path) -> Vec<StoredMail> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(folder.join(sub)) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        paths.sort();
        for file in paths {
            let raw = std::fs::read(&file).expect("message file");
            let parsed = mail_parser::MessageParser::default()
                .parse(&raw)
                .unwrap_or_else(|| panic!("{}: not a message", file.display()));
            let message_id = parsed.message_id().unwrap_or_default().to_string();
            let conversation_id = header(&parsed, "X-Chat-Conversation-Id");
            let day = header(&parsed, "X-Chat-Day");
            out.push(StoredMail {
                file,
                message_id,
                conversation_id,
                day,
                raw,
            });
        }
    }
    out
}

/// Whether `on_disk` is `sent` as Dovecot keeps a message: with bare LF
/// line ends, its file name recording the size with CRLF (`,W=`), which is
/// what IMAP serves back.
fn stored_by_dovecot(file: &Path, sent: &[u8], on_disk: &[u8]) -> bool {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
    let crlf_size = name
        .as_deref()
        .and_then(|n| n.split(",W=").nth(1))
        .and_then(|rest| rest.split([':', ',']).next())
        .and_then(|n| n.parse::<usize>().ok());
    let lf: Vec<u8> = sent
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w != b"\r\n")
        .map(|(i, _)| sent[i])
        .chain(sent.last().copied())
        .collect();
    crlf_size == Some(sent.len()) && lf == on_disk
}

/// The invariant of a local run's data directory `dir` (store and
/// Maildir as the embedded defaults lay them out), once the run has
/// completed: every conversation once ([`assert_each_conversation_once`]),
/// every object whole, no raw file left half-way.
pub async fn assert_local_invariant(dir: &Path, files: &[ExportFile], context: &str) {
    use chat_archive_core::adapters::LocalStore;
    use chat_archive_core::pipeline::{LocalLayout, Pipeline};
    let store = LocalStore::new(dir.join("store"));
    assert_each_conversation_once(&store, &dir.join("mailboxes"), files, context).await;
    assert_store_objects_whole(&store, context).await;
    let pipeline = Pipeline::local(&LocalLayout::new(dir)).expect("pipeline");
    let pending = pipeline.pending_raw_keys().await.expect("pending");
    assert!(
        pending.is_empty(),
        "{context}: files left half-way: {pending:?}"
    );
}

/// The Maildir++ folder `ICE Chat` of a mailbox under a Maildir root.
pub fn ice_folder(root: &Path, mailbox: &str) -> PathBuf {
    root.join(mailbox)
        .join("Maildir")
        .join(format!(".{FOLDER}"))
}

/// The invariant after a fault and a recovery, for the corpus `files`:
///
/// - every conversation with a mailbox is in each of its mailboxes exactly
///   once (one file per Message-ID), byte for byte the mail the convert stage
///   stored (nothing partial), and in no other mailbox;
/// - nothing was quarantined;
/// - per day, the status log has every conversation once: imported the ones
///   with mailboxes, failed with a reason the others, nothing pending,
///   partially imported or "skipped as duplicate" (each was imported once,
///   by this pipeline), and the counts add up.
///
/// `context` (the seed, the fault) starts every failure message.
pub async fn assert_each_conversation_once(
    store: &dyn ObjectStore,
    maildir_root: &Path,
    files: &[ExportFile],
    context: &str,
) {
    let expected = expected_mailboxes(files);
    for mailbox in MAILBOXES {
        let mails = folder_mails(&ice_folder(maildir_root, mailbox));
        let mut copies: BTreeMap<&str, usize> = BTreeMap::new();
        for mail in &mails {
            *copies.entry(mail.message_id.as_str()).or_default() += 1;
        }
        let doubled: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            doubled.is_empty(),
            "{context}: {mailbox}: Message-IDs with several copies: {doubled:?}"
        );
        let got: BTreeSet<String> = mails.iter().map(|m| m.conversation_id.clone()).collect();
        let want = expected.get(mailbox).cloned().unwrap_or_default();
        assert_eq!(
            got.len(),
            mails.len(),
            "{context}: {mailbox}: a conversation has several mails"
        );
        let missing: Vec<_> = want.difference(&got).collect();
        let extra: Vec<_> = got.difference(&want).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{context}: {mailbox}: missing {missing:?}, not its own {extra:?}"
        );
        for mail in &mails {
            let item_id = mail.message_id.split('@').next().unwrap_or_default();
            let key = format!("mail/ice/{}/{item_id}.eml", mail.day);
            let stored = store
                .get_bytes(&key)
                .await
                .unwrap_or_else(|e| panic!("{context}: {key}: {e}"));
            assert!(
                stored == mail.raw || stored_by_dovecot(&mail.file, &stored, &mail.raw),
                "{context}: {} is not the mail stored as {key} (partial or altered)",
                mail.file.display()
            );
        }
    }
    // No copy anywhere else (the firm address without a mailbox included).
    let with_mail: Vec<String> = std::fs::read_dir(maildir_root)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| count_files(&e.path().join("Maildir"), &["tmp"]) > 0)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    for mailbox in &with_mail {
        assert!(
            expected.contains_key(mailbox),
            "{context}: {mailbox} received mail"
        );
    }
    let quarantined = store.list("quarantine/").await.expect("list quarantine/");
    assert!(
        quarantined.is_empty(),
        "{context}: quarantined: {quarantined:?}"
    );

    for file in files {
        let key = format!("reports/ice/{}/status.json", file.day);
        let bytes = store
            .get_bytes(&key)
            .await
            .unwrap_or_else(|e| panic!("{context}: {key}: {e}"));
        let status: DayStatus = serde_json::from_slice(&bytes).expect("status JSON");
        let total = file.conversations.len() as u64;
        let failing = file
            .conversations
            .iter()
            .filter(|c| c.mailboxes.is_empty())
            .count() as u64;
        let fanout: u64 = file
            .conversations
            .iter()
            .map(|c| c.mailboxes.len() as u64)
            .sum();
        let counts = |s: &DayStatus| {
            (
                s.available_from_source,
                s.available_after_fanout,
                s.imported,
                s.partially_imported,
                s.skipped_duplicates,
                s.failed,
                s.pending,
            )
        };
        assert_eq!(
            counts(&status),
            (total, fanout, total - failing, 0, 0, failing, 0),
            "{context}: {}: (source, after fan-out, imported, partial, duplicates, failed, pending); failures: {:?}",
            file.day,
            status.failures
        );
        assert!(
            status.counts_add_up(),
            "{context}: {}: {status:?}",
            file.day
        );
        let failed_items: BTreeSet<&str> =
            status.failures.iter().map(|f| f.item_id.as_str()).collect();
        assert_eq!(
            failed_items.len() as u64,
            failing,
            "{context}: {}: failure rows {:?}",
            file.day,
            status.failures
        );
        assert!(
            status
                .failures
                .iter()
                .all(|f| !f.reason.trim().is_empty() && f.reason.contains("mailbox")),
            "{context}: {}: a failure without its reason: {:?}",
            file.day,
            status.failures
        );
    }
}

/// Every object of a local store reads back whole: its body has the size
/// and SHA-256 its metadata records (nothing half-written is visible).
pub async fn assert_store_objects_whole(store: &dyn ObjectStore, context: &str) {
    for key in store.list("").await.expect("list") {
        let info = store
            .head(&key)
            .await
            .expect("head")
            .unwrap_or_else(|| panic!("{context}: {key} listed but not there"));
        let body = store.get_bytes(&key).await.expect("get");
        assert_eq!(
            (body.len() as u64, hex::encode(sha2::Sha256::digest(&body))),
            (info.size, info.sha256),
            "{context}: {key}: body and recorded size/digest differ"
        );
    }
}
