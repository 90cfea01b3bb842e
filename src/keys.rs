//! Key rotation: re-seals every stored secret under the current key. Each value is replaced
//! only if it is still what was read (so a concurrent refresh wins), and values already under
//! the current key are skipped, so an interrupted run is resumed by running it again.

use crate::crypto::hex;
use crate::crypto::{Aad, Vault};
use crate::domain::{SealedField, SealedValue};
use crate::store::Store;

/// What a rotation run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// Sealed values looked at.
    pub examined: u64,
    /// Values re-sealed under the current key.
    pub resealed: u64,
    /// Values changed by someone else between read and write (already fresh).
    pub raced: u64,
}

/// Re-seals every value not sealed under the vault's current key, `page` values per query,
/// stopping after `max` re-seals when given (to bound one run).
pub async fn rotate(
    store: &dyn Store,
    vault: &Vault,
    page: u32,
    max: Option<u64>,
) -> anyhow::Result<RotationReport> {
    let mut report = RotationReport::default();
    for field in SealedField::ALL {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let values = store.sealed_values(field, after.as_deref(), page).await?;
            let Some(last) = values.last() else {
                break;
            };
            after = Some(last.row.clone());
            for value in &values {
                if max.is_some_and(|m| report.resealed >= m) {
                    return Ok(report);
                }
                report.examined += 1;
                if !vault.needs_reseal(&value.sealed)? {
                    continue;
                }
                let aad = aad_of(value)?;
                let plain = vault.open(&value.sealed, &aad)?;
                let resealed = vault.seal(&plain, &aad);
                if store.replace_sealed(value, &resealed).await? {
                    report.resealed += 1;
                } else {
                    report.raced += 1;
                }
            }
        }
    }
    Ok(report)
}

/// The AAD a value was sealed with, rebuilt from where it is stored.
fn aad_of(value: &SealedValue) -> anyhow::Result<Aad> {
    let row = match value.field {
        SealedField::AccessToken | SealedField::RefreshToken | SealedField::ProviderSecrets => {
            uuid::Uuid::from_slice(&value.row)?.to_string()
        }
        SealedField::PkceVerifier => hex(&value.row),
    };
    Ok(Aad::new(
        value.tenant_id,
        &value.provider,
        &row,
        value.field.aad_name(),
    ))
}
