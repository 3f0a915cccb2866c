//! Decryption holds a bounded amount of memory whatever the file size: a
//! counting allocator measures the peak heap of `decrypt_verify` on a file
//! made by GnuPG whose ciphertext is far bigger than the bound.
//!
//! (pgp's default SEIPDv1 mode reads the whole ciphertext into memory before
//! releasing any plaintext, and refuses files over 1 GiB; this test fails
//! if decryption falls back to it.)

use std::io::Write;

use chat_archive_core::crypto::{self, DecryptKeys, SignaturePolicy, SignatureStatus};
use integration_tests::counting_alloc::{self, Counting};
use integration_tests::gpg::Gpg;
use integration_tests::local::{FIRM_PASSPHRASE, FIRM_UID, SIGNER_UID};
use sha2::{Digest, Sha256};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: usize = 1024 * 1024;
/// Incompressible plaintext, so the ciphertext is as big as the plaintext.
const PLAINTEXT: usize = 96 * MIB;
/// What decryption may hold at its peak, buffers and keys included.
const BOUND: usize = 16 * MIB;

/// Pseudo-random bytes (xorshift): zlib cannot shrink them.
fn write_noise(path: &std::path::Path, len: usize) -> String {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("plain file"));
    let mut hash = Sha256::new();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut chunk = vec![0u8; MIB];
    for _ in 0..len / MIB {
        for word in chunk.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        hash.update(&chunk);
        file.write_all(&chunk).expect("write");
    }
    file.flush().expect("flush");
    hex::encode(hash.finalize())
}

struct HashingSink(Sha256, u64);

impl Write for HashingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        self.1 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn decryption_memory_does_not_grow_with_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let gpg = Gpg::new();
    gpg.generate_recipient(FIRM_UID, FIRM_PASSPHRASE);
    gpg.generate_signer(SIGNER_UID);
    let plain = dir.path().join("export.xml");
    let digest = write_noise(&plain, PLAINTEXT);
    let encrypted = dir.path().join("export.xml.pgp");
    gpg.encrypt(&plain, &encrypted, FIRM_UID, Some(SIGNER_UID), false);
    std::fs::remove_file(&plain).expect("remove plain");
    let ciphertext = std::fs::metadata(&encrypted).expect("encrypted").len() as usize;
    assert!(
        ciphertext > 4 * BOUND,
        "the fixture must dwarf the bound: {ciphertext} bytes"
    );

    let keys = DecryptKeys {
        secret_key: crypto::parse_secret_key(&gpg.export_secret(FIRM_UID, FIRM_PASSPHRASE), "key")
            .expect("secret key"),
        passphrase: FIRM_PASSPHRASE.into(),
        signer: Some(
            crypto::parse_public_key(&gpg.export_public(SIGNER_UID), "signer").expect("signer"),
        ),
        policy: SignaturePolicy::Required,
        xip_signers: Vec::new(),
        previous: Vec::new(),
    };
    let input = std::fs::File::open(&encrypted).expect("open");
    let mut sink = HashingSink(Sha256::new(), 0);

    let baseline = counting_alloc::start();
    let decrypted =
        crypto::decrypt_verify(input, "export.xml.pgp", &keys, &mut sink).expect("decrypts");
    let peak = counting_alloc::peak_since(baseline);

    assert_eq!(decrypted.signature, SignatureStatus::Verified);
    assert_eq!(sink.1, PLAINTEXT as u64);
    assert_eq!(hex::encode(sink.0.finalize()), digest);
    assert!(
        peak < BOUND,
        "decrypting {ciphertext} bytes of ciphertext held {peak} bytes at its peak (bound {BOUND})"
    );
}
