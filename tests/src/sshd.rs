//! A real OpenSSH sshd for the SFTP tests: its own configuration, host key,
//! log and PID file in a temporary directory, on a free loopback port,
//! `Subsystem sftp internal-sftp`. Started as root (`sshd` needs it to switch
//! to the login user) and stopped by the PID it wrote, never by name.
//!
//! Three system users (created with `useradd` when missing):
//! - [`KEY_USER`] may log in with a key only,
//! - [`PASSWORD_USER`] with a password only,
//! - [`BOTH_USER`] needs a key and then a password (`publickey,password`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Once;
use std::time::{Duration, SystemTime};

use chat_archive_core::adapters::sftp::SftpConfig;
use chat_archive_core::adapters::SecretsFile;
use chat_archive_core::ports::secrets::fields;
use chat_archive_core::ports::{SecretStore, SecretValue};

use crate::local::Firm;

pub const KEY_USER: &str = "cafirmkey";
pub const PASSWORD_USER: &str = "cafirmpw";
pub const BOTH_USER: &str = "cafirmboth";
/// The password of every test user (test-only, never a real credential).
pub const PASSWORD: &str = "Tst-only-pw-4c2e9b";
/// Passphrase of the encrypted client key.
pub const KEY_PASSPHRASE: &str = "tst-only-passphrase-81d";

const SSHD: &str = "/usr/sbin/sshd";

pub struct Sshd {
    dir: tempfile::TempDir,
    pub port: u16,
    /// The export directory the users list and read (world-readable).
    pub export_dir: PathBuf,
    running: bool,
}

fn run(command: &mut Command) -> String {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Creates the test users once per process and (re)sets their password:
/// a locked account (`!` in shadow) may not log in even with a key.
fn ensure_users() {
    static USERS: Once = Once::new();
    USERS.call_once(|| {
        let mut lines = String::new();
        for user in [KEY_USER, PASSWORD_USER, BOTH_USER] {
            let exists = Command::new("id")
                .arg("-u")
                .arg(user)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !exists {
                let status = Command::new("useradd")
                    .args(["-M", "-s", "/usr/sbin/nologin", user])
                    .status()
                    .expect("useradd runs");
                // Another test process may have created it meanwhile.
                let now = Command::new("id")
                    .arg("-u")
                    .arg(user)
                    .stdout(Stdio::null())
                    .status();
                assert!(
                    status.success() || now.is_ok_and(|s| s.success()),
                    "useradd {user} failed"
                );
            }
            lines.push_str(&format!("{user}:{PASSWORD}\n"));
        }
        let mut child = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .expect("chpasswd runs");
        std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), lines.as_bytes())
            .expect("chpasswd input");
        assert!(child.wait().expect("chpasswd").success(), "chpasswd failed");
    });
}

fn keygen(path: &Path, passphrase: &str, comment: &str) {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f"])
        .arg(path));
}

#[cfg(unix)]
fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

impl Sshd {
    /// Starts a fresh sshd (new host key, new client keys) on a free port.
    pub fn start() -> Self {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} missing: apt-get install -y openssh-server"
        );
        ensure_users();
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let dir = tempfile::Builder::new()
            .prefix("sshd")
            .tempdir()
            .expect("temp dir");
        // The login users must reach the export directory.
        chmod(dir.path(), 0o755);
        let export_dir = dir.path().join("export");
        std::fs::create_dir(&export_dir).expect("export dir");
        chmod(&export_dir, 0o755);
        let p = dir.path();
        keygen(&p.join("host_ed25519"), "", "test host");
        keygen(&p.join("other_host_ed25519"), "", "another host");
        keygen(&p.join("client"), "", "firm key");
        keygen(
            &p.join("client_encrypted"),
            KEY_PASSPHRASE,
            "firm key (encrypted)",
        );
        let authorized = [p.join("client.pub"), p.join("client_encrypted.pub")]
            .iter()
            .map(|f| std::fs::read_to_string(f).expect("client public key"))
            .collect::<String>();
        std::fs::write(p.join("authorized_keys"), authorized).expect("authorized_keys");
        let mut sshd = Self {
            dir,
            port: 0,
            export_dir,
            running: false,
        };
        for _ in 0..5 {
            sshd.port = crate::free_port();
            sshd.write_config();
            if sshd.launch() {
                return sshd;
            }
        }
        panic!("sshd did not start; log:\n{}", sshd.log());
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_config(&self) {
        let p = |name: &str| self.path(name).display().to_string();
        let config = format!(
            "Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {host_key}\n\
             PidFile {pid}\n\
             AuthorizedKeysFile {authorized}\n\
             StrictModes no\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication yes\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             LogLevel VERBOSE\n\
             AllowUsers {KEY_USER} {PASSWORD_USER} {BOTH_USER}\n\
             Subsystem sftp internal-sftp\n\
             Match User {KEY_USER}\n\
             \x20   AuthenticationMethods publickey\n\
             Match User {PASSWORD_USER}\n\
             \x20   AuthenticationMethods password\n\
             Match User {BOTH_USER}\n\
             \x20   AuthenticationMethods publickey,password\n\
             Match User {KEY_USER},{PASSWORD_USER},{BOTH_USER}\n\
             \x20   ForceCommand internal-sftp\n\
             \x20   AllowTcpForwarding no\n\
             \x20   X11Forwarding no\n",
            port = self.port,
            host_key = p("host_ed25519"),
            pid = p("sshd.pid"),
            authorized = p("authorized_keys"),
        );
        std::fs::write(self.path("sshd_config"), config).expect("sshd_config");
    }

    /// Runs sshd (it daemonizes once listening) and waits for its PID file.
    fn launch(&mut self) -> bool {
        let _ = std::fs::remove_file(self.path("sshd.pid"));
        let status = Command::new(SSHD)
            .arg("-f")
            .arg(self.path("sshd_config"))
            .arg("-E")
            .arg(self.path("sshd.log"))
            .stdin(Stdio::null())
            .status()
            .expect("sshd runs");
        if !status.success() {
            return false;
        }
        for _ in 0..200 {
            if self.pid().is_some()
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                self.running = true;
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    /// The listener's PID, from its PID file.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.path("sshd.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The server's host key as an OpenSSH public key line (what to pin).
    pub fn host_key(&self) -> String {
        std::fs::read_to_string(self.path("host_ed25519.pub"))
            .expect("host key")
            .trim()
            .to_string()
    }

    /// Another host's key: pinning it must make every connection fail.
    pub fn other_host_key(&self) -> String {
        std::fs::read_to_string(self.path("other_host_ed25519.pub"))
            .expect("host key")
            .trim()
            .to_string()
    }

    /// `SHA256:...` of the server's host key, as `ssh-keygen -lf` prints it.
    pub fn host_fingerprint(&self) -> String {
        let out = run(Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.path("host_ed25519.pub")));
        out.split_whitespace()
            .nth(1)
            .expect("fingerprint")
            .to_string()
    }

    /// The unencrypted client private key (OpenSSH format).
    /// The site as a firm configures it: this server on loopback, its host
    /// key pinned, short timeouts, one attempt, no settle pause.
    pub fn site_config(&self) -> SftpConfig {
        SftpConfig {
            host: "127.0.0.1".into(),
            port: self.port,
            directory: self.export_dir.display().to_string(),
            host_keys: vec![self.host_key()],
            connect_timeout_secs: 20,
            request_timeout_secs: 20,
            settle_secs: 0,
            attempts: 1,
            ..Default::default()
        }
    }

    /// Puts the key login of [`KEY_USER`] (firm code and private key) into
    /// the firm's secret.
    pub async fn grant_key_login(&self, firm: &Firm) {
        SecretsFile::new(firm.layout.secrets())
            .update(
                "ice",
                std::collections::BTreeMap::from([
                    (fields::FIRM_CODE.to_string(), SecretValue::new(KEY_USER)),
                    (
                        fields::SSH_PRIVATE_KEY.to_string(),
                        SecretValue::new(self.client_key()),
                    ),
                ]),
            )
            .await
            .expect("secrets");
    }

    pub fn client_key(&self) -> String {
        std::fs::read_to_string(self.path("client")).expect("client key")
    }

    pub fn client_key_path(&self) -> PathBuf {
        self.path("client")
    }

    /// The client private key encrypted with [`KEY_PASSPHRASE`].
    pub fn encrypted_client_key(&self) -> String {
        std::fs::read_to_string(self.path("client_encrypted")).expect("client key")
    }

    /// A `known_hosts` file pinning the server (for OpenSSH's own client).
    pub fn known_hosts(&self) -> PathBuf {
        let path = self.path("known_hosts");
        std::fs::write(
            &path,
            format!("[127.0.0.1]:{} {}\n", self.port, self.host_key()),
        )
        .expect("known_hosts");
        path
    }

    /// Writes a file into the export directory with the given mtime.
    pub fn put_file(&self, name: &str, bytes: &[u8], modified: SystemTime) -> PathBuf {
        let path = self.export_dir.join(name);
        std::fs::write(&path, bytes).expect("export file");
        self.set_mtime(&path, modified);
        path
    }

    pub fn set_mtime(&self, path: &Path, modified: SystemTime) {
        std::fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(modified))
            .expect("set mtime");
        chmod(path, 0o644);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("sshd.log")).unwrap_or_default()
    }

    /// Every process below the listener (one tree per connection).
    fn session_pids(&self) -> Vec<u32> {
        let Some(root) = self.pid() else {
            return Vec::new();
        };
        let mut parents = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid ...`: comm may hold spaces, so parse after ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parents.push((pid, ppid));
            }
        }
        let mut tree = vec![root];
        let mut i = 0;
        while i < tree.len() {
            let parent = tree[i];
            tree.extend(
                parents
                    .iter()
                    .filter(|(_, pp)| *pp == parent)
                    .map(|(p, _)| *p),
            );
            i += 1;
        }
        tree.remove(0);
        tree
    }

    fn kill(pid: u32, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }

    fn alive(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
            && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    !s.rsplit_once(')')
                        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
                })
                .unwrap_or(false)
    }

    fn wait_gone(pids: &[u32]) {
        for _ in 0..200 {
            if !pids.iter().any(|p| Self::alive(*p)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Kills the connections' processes (SIGKILL, as a crash or a cut cable
    /// would end them) and leaves the listener up: clients may reconnect.
    pub fn kill_sessions(&self) -> usize {
        let pids = self.session_pids();
        for pid in &pids {
            Self::kill(*pid, "-KILL");
        }
        Self::wait_gone(&pids);
        pids.len()
    }

    /// Stops the server: the connections, then the listener, by PID.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        self.kill_sessions();
        if let Some(pid) = self.pid() {
            Self::kill(pid, "-TERM");
            Self::wait_gone(&[pid]);
        }
        self.running = false;
    }

    /// Starts it again on the same port, with the same keys and users.
    pub fn restart(&mut self) {
        self.stop();
        for _ in 0..100 {
            if self.launch() {
                return;
            }
            // The port may linger for a moment after the old listener died.
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sshd did not restart; log:\n{}", self.log());
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}
