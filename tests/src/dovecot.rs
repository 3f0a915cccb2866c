//! A real Dovecot (Debian `dovecot-imapd`) for the IMAP tests: its own
//! configuration in a temporary directory (absolute paths), users in a
//! passwd-file, a master user, Maildir storage, a plaintext port and a TLS port
//! with a self-signed certificate made by openssl. Started with
//! `dovecot -c CONFIG`, stopped by the PID in `base_dir/master.pid`.

use std::path::{Path, PathBuf};
use std::process::Command;

use chat_archive_core::adapters::imap::{ImapAuth, ImapConfig};

use crate::process::{wait_for_port, PidFileGuard};

pub const MASTER_USER: &str = "archiver";
pub const MASTER_PASSWORD: &str = "m4ster-s3cret-pw";
/// Every user's own password (the tests use the master user, or this to check).
pub const USER_PASSWORD: &str = "user-pw";

/// Knobs of a test server.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A personal namespace prefix such as `INBOX.` (Cyrus/Courier layout).
    pub namespace_prefix: Option<String>,
    /// The largest message the server accepts (quota plugin), e.g. `1M`.
    pub max_mail_size: Option<String>,
    /// Accept SASL XOAUTH2 bearer tokens: JWTs signed (HS256) with this key,
    /// naming the user in their `email` claim (oauth2 passdb, local validation).
    pub oauth2_hs256_key: Option<Vec<u8>>,
    /// With `oauth2_hs256_key`: tokens must name this in their `aud` claim
    /// (Dovecot's `client_id` check), as a mail service accepts only tokens
    /// issued for it.
    pub oauth2_audience: Option<String>,
    /// Lines added to the configuration as they are (benchmarks).
    pub extra_config: String,
}

pub struct Dovecot {
    pub dir: tempfile::TempDir,
    pub imap_port: u16,
    pub imaps_port: u16,
    pub options: Options,
    guard: PidFileGuard,
}

impl Dovecot {
    pub fn start(users: &[&str]) -> Self {
        Self::start_with(users, Options::default())
    }

    pub fn start_with(users: &[&str], options: Options) -> Self {
        assert!(
            Path::new("/usr/sbin/dovecot").exists(),
            "dovecot is not installed: run scripts/install-test-deps.sh (apt-get install dovecot-imapd)"
        );
        ensure_vmail_user();
        let dir = tempfile::Builder::new()
            .prefix("dovecot")
            .tempdir()
            .expect("temp dir");
        // Dovecot's unprivileged processes must reach the mail and run dirs.
        set_mode(dir.path(), 0o755);
        for sub in ["run", "state", "mail"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("dovecot dirs");
        }
        make_certificate(dir.path());
        let users_file: String = users
            .iter()
            .map(|u| format!("{u}:{{PLAIN}}{USER_PASSWORD}::::::\n"))
            .collect();
        std::fs::write(dir.path().join("users"), users_file).expect("users file");
        std::fs::write(
            dir.path().join("masters"),
            format!("{MASTER_USER}:{{PLAIN}}{MASTER_PASSWORD}::::::\n"),
        )
        .expect("masters file");
        let status = Command::new("chown")
            .args(["-R", "vmail:vmail"])
            .arg(dir.path().join("mail"))
            .status()
            .expect("chown");
        assert!(status.success(), "chown vmail mail dir");

        let guard = PidFileGuard {
            pid_file: dir.path().join("run/master.pid"),
        };
        let mut server = Self {
            dir,
            imap_port: 0,
            imaps_port: 0,
            options,
            guard,
        };
        // A free port can be taken by someone else before Dovecot binds it:
        // try again with new ports.
        for _ in 0..5 {
            server.imap_port = crate::free_port();
            server.imaps_port = crate::free_port();
            server.write_config();
            if server.launch() {
                return server;
            }
            server.stop();
        }
        panic!("dovecot did not start: {}", server.log());
    }

    fn write_config(&self) {
        let d = self.dir.path().display();
        let namespace = match &self.options.namespace_prefix {
            Some(prefix) => format!(
                "namespace inbox {{\n  inbox = yes\n  prefix = {prefix}\n  separator = .\n}}\n"
            ),
            None => String::new(),
        };
        let quota = match &self.options.max_mail_size {
            Some(size) => format!(
                "mail_plugins = $mail_plugins quota\nplugin {{\n  quota = count:User quota\n  \
                 quota_vsizes = yes\n  quota_max_mail_size = {size}\n}}\n"
            ),
            None => String::new(),
        };
        let (mechanisms, oauth2) = match &self.options.oauth2_hs256_key {
            Some(key) => {
                let keys = self.dir.path().join("keys/default/HS256");
                std::fs::create_dir_all(&keys).expect("keys dir");
                std::fs::write(keys.join("default"), base64_encode(key)).expect("oauth2 key");
                let audience = match &self.options.oauth2_audience {
                    Some(aud) => format!("client_id = {aud}\n"),
                    None => String::new(),
                };
                std::fs::write(
                    self.dir.path().join("oauth2.conf.ext"),
                    format!(
                        "introspection_mode = local\nlocal_validation_key_dict = fs:posix:prefix={d}/keys/\n\
                         username_attribute = email\n{audience}"
                    ),
                )
                .expect("oauth2 conf");
                (
                    "plain login xoauth2",
                    format!(
                        "passdb {{\n  driver = oauth2\n  mechanisms = xoauth2\n  args = {d}/oauth2.conf.ext\n}}\n"
                    ),
                )
            }
            None => ("plain login", String::new()),
        };
        let config = format!(
            r#"protocols = imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
ssl = yes
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
auth_master_user_separator = *
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
mail_location = maildir:{d}/mail/%u/Maildir
{extra}
{namespace}{quota}{oauth2}passdb {{
  driver = passwd-file
  master = yes
  args = scheme=PLAIN {d}/masters
  result_success = continue
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users
}}
userdb {{
  driver = static
  args = uid=vmail gid=vmail home={d}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
"#,
            extra = self.options.extra_config,
            imap = self.imap_port,
            imaps = self.imaps_port,
        );
        std::fs::write(self.config_path(), config).expect("dovecot.conf");
    }

    fn launch(&self) -> bool {
        // Not `output()`: the daemon inherits the pipes and would keep the
        // wait open forever. Start-up errors go to a file beside the config.
        let errors = std::fs::File::create(self.dir.path().join("start.err")).expect("start.err");
        let status = Command::new("/usr/sbin/dovecot")
            .arg("-c")
            .arg(self.config_path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(errors)
            .status()
            .expect("run dovecot");
        if !status.success() {
            let errors =
                std::fs::read_to_string(self.dir.path().join("start.err")).unwrap_or_default();
            eprintln!("dovecot: {errors}");
            return false;
        }
        wait_for_port(self.imap_port) && wait_for_port(self.imaps_port)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("dovecot.conf")
    }

    pub fn pid(&self) -> Option<i32> {
        self.guard.pid()
    }

    /// Stops the server as a crash would: SIGTERM to the process group the
    /// master leads (its PID). SIGTERM to the master alone leaves the imap
    /// processes serving their open connections. Waits until every process
    /// of the group has exited.
    pub fn stop(&self) {
        let Some(pid) = self.guard.pid() else { return };
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{pid}")])
            .stderr(std::process::Stdio::null())
            .status();
        for _ in 0..400 {
            if !group_running(pid) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
    }

    /// Starts it again on the same ports with the same data.
    pub fn restart(&self) {
        assert!(self.launch(), "dovecot did not restart: {}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// The Maildir of a user, as Dovecot stores it.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.path().join("mail").join(user).join("Maildir")
    }

    /// Sink settings for this server: TLS port, its certificate as CA, master user.
    pub fn imap_config(&self) -> ImapConfig {
        ImapConfig {
            host: "127.0.0.1".into(),
            port: Some(self.imaps_port),
            ca_file: Some(self.ca_file()),
            auth: ImapAuth::MasterUser {
                admin_user: MASTER_USER.into(),
                separator: "*".into(),
            },
            ..ImapConfig::default()
        }
    }

    /// Sink settings for the plaintext port.
    pub fn plaintext_config(&self) -> ImapConfig {
        ImapConfig {
            port: Some(self.imap_port),
            ca_file: None,
            insecure_plaintext_for_local_testing_only: true,
            ..self.imap_config()
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether a process of the group is still running (zombies left to an init
/// that does not reap them do not count).
fn group_running(pgid: i32) -> bool {
    let Ok(output) = Command::new("ps").args(["-eo", "pgid=,stat="]).output() else {
        return false;
    };
    String::from_utf8_lossy(&output.stdout).lines().any(|line| {
        let mut fields = line.split_whitespace();
        fields.next().and_then(|g| g.parse::<i32>().ok()) == Some(pgid)
            && fields.next().is_some_and(|stat| !stat.starts_with('Z'))
    })
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn ensure_vmail_user() {
    let known = Command::new("id")
        .arg("vmail")
        .output()
        .is_ok_and(|o| o.status.success());
    if !known {
        // Two tests may race to create it; the loser's failure is harmless.
        let _ = Command::new("useradd")
            .args(["-M", "-s", "/usr/sbin/nologin", "vmail"])
            .status();
    }
}

/// A self-signed server certificate for 127.0.0.1 and localhost.
fn make_certificate(dir: &Path) {
    let output = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        // A leaf, not a CA (openssl's default): webpki refuses a CA
        // certificate presented as the server's own.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .expect("openssl runs");
    assert!(
        output.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A firm (domain `acme.example`, signatures required) whose import goes
/// to the mail server `imap` with the master user's password in its
/// secret; `configure` adjusts the connector first.
pub async fn firm_importing_to(
    imap: ImapConfig,
    configure: impl FnOnce(&mut chat_archive_core::config::ConnectorConfig),
) -> crate::local::Firm {
    use chat_archive_core::config::ConnectorConfig;
    use chat_archive_core::crypto::SignaturePolicy;
    use chat_archive_core::ports::{secrets::fields, SecretValue};
    let firm = crate::local::Firm::new(&[], SignaturePolicy::Required);
    let mut config = ConnectorConfig::ice();
    config.firm_domains = vec!["acme.example".into()];
    config.signature_policy = SignaturePolicy::Required;
    config.imap = Some(imap);
    configure(&mut config);
    firm.write_config(config);
    firm.pipeline()
        .secrets
        .update(
            "ice",
            std::collections::BTreeMap::from([(
                fields::MAILBOX_PASSWORD.to_string(),
                SecretValue::new(MASTER_PASSWORD),
            )]),
        )
        .await
        .expect("the master password into the firm's secret");
    firm
}

/// A bearer token for `user` that the server (with `oauth2_hs256_key = key`)
/// accepts for an hour: a JWT signed with HMAC-SHA256.
pub fn oauth2_token(key: &[u8], user: &str) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = b64(
        serde_json::json!({"sub": user, "email": user, "iat": now - 10, "exp": now + 3600})
            .to_string()
            .as_bytes(),
    );
    let signing_input = format!("{header}.{claims}");
    // HMAC (RFC 2104) over SHA-256, block size 64.
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(signing_input.as_bytes())
        .finalize();
    let mac = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    format!("{signing_input}.{}", b64(&mac))
}

/// An independent client (async-imap's own session API over plaintext) to
/// look at what the server holds.
pub mod client {
    use async_imap::Session;
    use tokio::net::TcpStream;
    use tokio_stream::StreamExt;

    pub type ImapSession = Session<TcpStream>;

    /// One message as the server has it.
    #[derive(Debug, Clone)]
    pub struct Fetched {
        pub uid: u32,
        pub flags: Vec<String>,
        pub internal_date: Option<chrono::DateTime<chrono::FixedOffset>>,
        pub raw: Vec<u8>,
    }

    /// Logs in as the user through the master user.
    pub async fn login(port: u16, user: &str) -> ImapSession {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let mut client = async_imap::Client::new(tcp);
        client
            .read_response()
            .await
            .expect("greeting")
            .expect("greeting");
        client
            .login(
                format!("{user}*{}", super::MASTER_USER),
                super::MASTER_PASSWORD,
            )
            .await
            .map_err(|(e, _)| e)
            .expect("master login")
    }

    /// Every folder name of the user.
    pub async fn folders(port: u16, user: &str) -> Vec<String> {
        let mut session = login(port, user).await;
        let names: Vec<String> = session
            .list(Some(""), Some("*"))
            .await
            .expect("LIST")
            .filter_map(|n| n.ok().map(|n| n.name().to_string()))
            .collect()
            .await;
        let _ = session.logout().await;
        names
    }

    /// Every message of a folder (empty when the folder does not exist).
    pub async fn messages(port: u16, user: &str, folder: &str) -> Vec<Fetched> {
        let mut session = login(port, user).await;
        if session.examine(folder).await.is_err() {
            return Vec::new();
        }
        let mut out = Vec::new();
        {
            let mut stream = session
                .uid_fetch("1:*", "(UID FLAGS INTERNALDATE BODY.PEEK[])")
                .await
                .expect("FETCH");
            while let Some(fetch) = stream.next().await {
                let fetch = fetch.expect("FETCH item");
                out.push(Fetched {
                    uid: fetch.uid.unwrap_or_default(),
                    flags: fetch.flags().map(|f| format!("{f:?}")).collect(),
                    internal_date: fetch.internal_date(),
                    raw: fetch.body().unwrap_or_default().to_vec(),
                });
            }
        }
        let _ = session.logout().await;
        out.sort_by_key(|m| m.uid);
        out
    }

    /// Appends a message as is (to set up duplicates the sink must clean up).
    pub async fn append(port: u16, user: &str, folder: &str, raw: &[u8]) {
        let mut session = login(port, user).await;
        let _ = session.create(folder).await;
        session
            .append(folder, None, None, raw)
            .await
            .expect("APPEND");
        let _ = session.logout().await;
    }
}
