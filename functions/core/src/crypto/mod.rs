//! OpenPGP: streaming decryption and signature verification (and, for
//! producers and tests, encryption and signing).

mod pgp_stream;

pub use pgp_stream::{
    decrypt_verify, encrypt_and_sign, parse_public_key, parse_public_keys, parse_secret_key,
    public_key_expires_at, secret_key_expires_at, verify_detached, DecryptKeys, Decrypted,
    SignaturePolicy, SignatureStatus,
};
