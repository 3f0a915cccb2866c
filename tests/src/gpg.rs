//! GnuPG in a private home directory: makes the keys and the encrypted,
//! signed fixtures with a client we did not write.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Gpg {
    home: tempfile::TempDir,
}

impl Default for Gpg {
    fn default() -> Self {
        Self::new()
    }
}

impl Gpg {
    pub fn new() -> Self {
        let home = tempfile::Builder::new()
            .prefix("gpg-home")
            .tempdir()
            .expect("temp GNUPGHOME");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700))
                .expect("chmod GNUPGHOME");
        }
        Self { home }
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("gpg");
        cmd.env("GNUPGHOME", self.home.path()).args([
            "--batch",
            "--yes",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
            "--trust-model",
            "always",
        ]);
        cmd
    }

    fn run(&self, args: &[&str]) -> Vec<u8> {
        let output = self.command().args(args).output().expect("gpg runs");
        assert!(
            output.status.success(),
            "gpg {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    /// An encryption key (with encryption subkey) protected by `passphrase`.
    pub fn generate_recipient(&self, uid: &str, passphrase: &str) {
        self.run(&[
            "--passphrase",
            passphrase,
            "--quick-gen-key",
            uid,
            "default",
            "default",
            "never",
        ]);
    }

    /// A signing-only ed25519 key without passphrase.
    pub fn generate_signer(&self, uid: &str) {
        self.generate_signer_expiring(uid, "never");
    }

    /// A signing-only ed25519 key valid for `expire` (GnuPG's form: `20d`,
    /// `1y`, `never`).
    pub fn generate_signer_expiring(&self, uid: &str, expire: &str) {
        self.run(&[
            "--passphrase",
            "",
            "--quick-gen-key",
            uid,
            "ed25519",
            "sign",
            expire,
        ]);
    }

    pub fn export_secret(&self, uid: &str, passphrase: &str) -> String {
        String::from_utf8(self.run(&[
            "--passphrase",
            passphrase,
            "--armor",
            "--export-secret-keys",
            uid,
        ]))
        .expect("armored")
    }

    pub fn export_public(&self, uid: &str) -> String {
        String::from_utf8(self.run(&["--armor", "--export", uid])).expect("armored")
    }

    /// Signs (when `signer` is given) and encrypts `input` to `recipient`.
    pub fn encrypt(
        &self,
        input: &Path,
        output: &Path,
        recipient: &str,
        signer: Option<&str>,
        armor: bool,
    ) {
        let (input, output) = (
            input.to_str().expect("utf-8 path"),
            output.to_str().expect("utf-8 path"),
        );
        let mut args = vec!["--compress-algo", "zlib", "-r", recipient, "-o", output];
        if armor {
            args.push("--armor");
        }
        if let Some(signer) = signer {
            args.extend(["-u", signer, "--sign"]);
        }
        args.extend(["--encrypt", input]);
        self.run(&args);
    }

    pub fn detach_sign(&self, input: &Path, signer: &str) -> PathBuf {
        let sig = input.with_extension("sig");
        self.run(&[
            "-u",
            signer,
            "-o",
            sig.to_str().expect("utf-8 path"),
            "--detach-sign",
            input.to_str().expect("utf-8 path"),
        ]);
        sig
    }
}
