//! Microsoft Entra ID for Event Hubs and Blob Storage: `azure_identity`'s credentials tried in
//! the order of the SDKs' default chain (azure_identity 1.x has no `DefaultAzureCredential`).
//!
//! 1. `WorkloadIdentityCredential`, when `AZURE_FEDERATED_TOKEN_FILE` is set (AKS workload
//!    identity);
//! 2. `ClientSecretCredential`, when `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and
//!    `AZURE_CLIENT_SECRET` are set (a service principal);
//! 3. `ManagedIdentityCredential` (App Service, Functions, Arc, VMs; `AZURE_CLIENT_ID` picks a
//!    user-assigned identity);
//! 4. `DeveloperToolsCredential`: the Azure CLI (`az login`) or Azure Developer CLI session.
//!
//! The first that hands out a token is kept for later requests. The identity needs the role
//! *Azure Event Hubs Data Owner* (or *Sender* and *Receiver*) on the namespace or hub, and
//! *Storage Blob Data Contributor* on the checkpoint container.

use std::sync::Arc;

use async_trait::async_trait;
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use parking_lot::Mutex;

/// The default chain (see the module documentation).
#[derive(Debug)]
pub(crate) struct DefaultChain {
    candidates: Vec<(&'static str, Arc<dyn TokenCredential>)>,
    chosen: Mutex<Option<usize>>,
}

impl DefaultChain {
    pub(crate) fn new() -> azure_core::Result<Self> {
        let mut candidates: Vec<(&'static str, Arc<dyn TokenCredential>)> = Vec::new();
        let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty());
        if set("AZURE_FEDERATED_TOKEN_FILE") {
            candidates.push((
                "workload identity",
                azure_identity::WorkloadIdentityCredential::new(None)?,
            ));
        }
        if set("AZURE_TENANT_ID") && set("AZURE_CLIENT_ID") && set("AZURE_CLIENT_SECRET") {
            let variable = |name: &str| std::env::var(name).unwrap_or_default();
            candidates.push((
                "client secret (AZURE_CLIENT_SECRET)",
                azure_identity::ClientSecretCredential::new(
                    &variable("AZURE_TENANT_ID"),
                    variable("AZURE_CLIENT_ID"),
                    variable("AZURE_CLIENT_SECRET").into(),
                    None,
                )?,
            ));
        }
        candidates.push((
            "managed identity",
            azure_identity::ManagedIdentityCredential::new(None)?,
        ));
        candidates.push((
            "developer tools (az login, azd auth login)",
            azure_identity::DeveloperToolsCredential::new(None)?,
        ));
        Ok(DefaultChain {
            candidates,
            chosen: Mutex::new(None),
        })
    }
}

#[async_trait]
impl TokenCredential for DefaultChain {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let chosen = *self.chosen.lock();
        if let Some(index) = chosen {
            return self.candidates[index].1.get_token(scopes, options).await;
        }
        let mut failures = Vec::new();
        for (index, (name, credential)) in self.candidates.iter().enumerate() {
            match credential.get_token(scopes, options.clone()).await {
                Ok(token) => {
                    tracing::info!(credential = name, "Microsoft Entra ID credential chosen");
                    *self.chosen.lock() = Some(index);
                    return Ok(token);
                }
                Err(error) => failures.push(format!("{name}: {error}")),
            }
        }
        Err(azure_core::Error::with_message(
            azure_core::error::ErrorKind::Credential,
            format!(
                "no Microsoft Entra ID credential worked ({})",
                failures.join("; ")
            ),
        ))
    }
}
