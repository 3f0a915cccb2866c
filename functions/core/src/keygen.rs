//! The admin's first step: the key pairs a firm hands to ICE. The private
//! halves go into the secrets store; the public halves are given to ICE.

use std::collections::BTreeMap;

use pgp::composed::{
    EncryptionCaps, KeyType, SecretKeyParamsBuilder, SignedPublicKey, SignedSecretKey,
    SubkeyParamsBuilder,
};
use pgp::crypto::ecc_curve::ECCCurve;
use pgp::types::KeyDetails;

use crate::error::{Error, Result};
use crate::ports::secrets::fields;
use crate::ports::SecretValue;

/// A generated OpenPGP key pair: ICE encrypts exports to the public key.
pub struct PgpKeyPair {
    pub secret: SignedSecretKey,
    pub public: SignedPublicKey,
}

impl PgpKeyPair {
    pub fn fingerprint(&self) -> String {
        self.public.fingerprint().to_string()
    }

    pub fn public_armored(&self) -> Result<String> {
        self.public
            .to_armored_string(None.into())
            .map_err(|e| Error::Pgp(e.to_string()))
    }

    pub fn secret_armored(&self) -> Result<String> {
        self.secret
            .to_armored_string(None.into())
            .map_err(|e| Error::Pgp(e.to_string()))
    }
}

/// Generates an OpenPGP key (Ed25519 primary for certification and signing,
/// Curve25519 subkey for encryption: GnuPG's default kind, read by every
/// current OpenPGP implementation), protected by `passphrase`.
pub fn generate_pgp(user_id: &str, passphrase: &str) -> Result<PgpKeyPair> {
    let pgp_err = |e: &dyn std::fmt::Display| Error::Pgp(format!("generating key: {e}"));
    let encryption = SubkeyParamsBuilder::default()
        .key_type(KeyType::ECDH(ECCCurve::Curve25519Legacy))
        .can_encrypt(EncryptionCaps::All)
        .passphrase(Some(passphrase.to_string()))
        .build()
        .map_err(|e| pgp_err(&e))?;
    let params = SecretKeyParamsBuilder::default()
        .key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(true)
        .primary_user_id(user_id.to_string())
        .passphrase(Some(passphrase.to_string()))
        .subkeys(vec![encryption])
        .build()
        .map_err(|e| pgp_err(&e))?;
    let secret = params
        .generate(rand::thread_rng())
        .map_err(|e| pgp_err(&e))?;
    let public = SignedPublicKey::from(secret.clone());
    Ok(PgpKeyPair { secret, public })
}

/// A generated SSH key pair for the SFTP login.
pub struct SshKeyPair {
    pub private_openssh: SecretValue,
    pub public_openssh: String,
    pub fingerprint: String,
}

pub fn generate_ssh(comment: &str) -> Result<SshKeyPair> {
    let mut key = ssh_key::PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519)
        .map_err(|e| Error::Config(format!("generating SSH key: {e}")))?;
    key.set_comment(comment);
    let private = key
        .to_openssh(ssh_key::LineEnding::LF)
        .map_err(|e| Error::Config(format!("encoding SSH key: {e}")))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| Error::Config(format!("encoding SSH key: {e}")))?;
    Ok(SshKeyPair {
        private_openssh: SecretValue::new(private.to_string()),
        public_openssh: public,
        fingerprint: key
            .public_key()
            .fingerprint(ssh_key::HashAlg::Sha256)
            .to_string(),
    })
}

/// Everything `keys generate` made: secret fields to store, public parts to hand out.
pub struct GeneratedKeys {
    pub pgp: PgpKeyPair,
    pub ssh: SshKeyPair,
    pub secret_fields: BTreeMap<String, SecretValue>,
}

pub fn generate_connector_keys(
    firm_code: &str,
    user_id: &str,
    passphrase: &str,
) -> Result<GeneratedKeys> {
    let pgp = generate_pgp(user_id, passphrase)?;
    let ssh = generate_ssh(&format!("{firm_code} chat archive"))?;
    let secret_fields = BTreeMap::from([
        (fields::FIRM_CODE.to_string(), SecretValue::new(firm_code)),
        (
            fields::PGP_PRIVATE_KEY.to_string(),
            SecretValue::new(pgp.secret_armored()?),
        ),
        (
            fields::PGP_PASSPHRASE.to_string(),
            SecretValue::new(passphrase),
        ),
        (
            fields::PGP_PUBLIC_KEY.to_string(),
            SecretValue::new(pgp.public_armored()?),
        ),
        (
            fields::SSH_PRIVATE_KEY.to_string(),
            ssh.private_openssh.clone(),
        ),
        (
            fields::SSH_PUBLIC_KEY.to_string(),
            SecretValue::new(ssh.public_openssh.clone()),
        ),
    ]);
    Ok(GeneratedKeys {
        pgp,
        ssh,
        secret_fields,
    })
}

/// A random passphrase for a generated key (the operator may supply their own).
pub fn random_passphrase() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..32)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}
