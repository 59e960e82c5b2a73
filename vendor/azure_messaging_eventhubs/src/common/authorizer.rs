// Copyright (c) Microsoft Corporation. All Rights reserved
// Licensed under the MIT license.

// cspell:ignore sastoken refreshable

use crate::{
    common::recoverable::{RecoverableConnection, MAX_GENERATION_RETRIES},
    error::Result,
};
use async_lock::RwLock;
use azure_core::{
    async_runtime::{get_async_runtime, SpawnedTask},
    credentials::{AccessToken, TokenCredential},
    http::Url,
    time::{Duration, OffsetDateTime},
};
use azure_core_amqp::{AmqpClaimsBasedSecurityApis as _, AmqpError};
use rand::{rng, RngExt};
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex as SyncMutex, Weak},
};
use tracing::{debug, error, info, trace, warn};

// The number of seconds before token expiration that we wake up to refresh the token.
const TOKEN_REFRESH_BIAS: Duration = Duration::minutes(6); // By default, we refresh tokens 6 minutes before they expire.
const TOKEN_REFRESH_JITTER_MIN: Duration = Duration::seconds(-5); // Minimum jitter (added from the bias, so a negative number means we refresh before the bias)
const TOKEN_REFRESH_JITTER_MAX: Duration = Duration::seconds(5); // Maximum jitter (added to the bias)

// Floor delay applied after a pass that did not write any fresh token back:
// either one or more refreshes failed, or a recovery made the pass discard its
// results. Both outcomes leave the cached token's `expires_on` unchanged, so its
// computed refresh_time stays in the past and the next pass would not sleep.
// Without this floor a persistent failure (credential outage, CBS down) or a
// recovery storm busy-spins, hammering get_token / perform_authorization with no
// backoff. See PR #4593 review and the `Discarded` arm below (#4454).
const TOKEN_REFRESH_RETRY_BACKOFF: Duration = Duration::seconds(30);

const EVENTHUBS_AUTHORIZATION_SCOPE: &str = "https://eventhubs.azure.net/.default";

#[derive(Debug)]
struct TokenRefreshTimes {
    before_expiration_refresh_time: Duration,
    jitter_min: Duration,
    jitter_max: Duration,
}

impl Default for TokenRefreshTimes {
    fn default() -> Self {
        Self {
            before_expiration_refresh_time: TOKEN_REFRESH_BIAS,
            jitter_min: TOKEN_REFRESH_JITTER_MIN,
            jitter_max: TOKEN_REFRESH_JITTER_MAX,
        }
    }
}

/// What one [`Authorizer::refresh_due_tokens`] pass concluded.
#[derive(Debug, PartialEq, Eq)]
enum RefreshPass {
    /// The pass ran to the end. `failed` is true when at least one path did not
    /// refresh, so the caller must back off before the next pass.
    Completed { failed: bool },
    /// A recovery advanced the generation while the pass was in flight, so the
    /// pass dropped the tokens it had refreshed (#4454). This is a distinct
    /// outcome from `Completed { failed: true }`, because nothing failed, but the
    /// caller must still back off: the cache keeps the old tokens, so they stay
    /// due and the next pass would not sleep.
    Discarded,
    /// The recoverable connection is gone, so the refresh task must stop.
    Stop,
}

enum AuthorizationRefresherState {
    NotStarted,
    Running(SpawnedTask),
    Stopped,
}

pub(crate) struct Authorizer {
    authorization_scopes: RwLock<HashMap<Url, AccessToken>>,
    authorization_refresher: SyncMutex<AuthorizationRefresherState>,
    /// Bias to apply to token refresh time. This determines how much time we will refresh the token before it expires.
    token_refresh_bias: SyncMutex<TokenRefreshTimes>,
    credential: Arc<dyn TokenCredential>,
    /// The CBS token type to present. `None` (the default) means a JWT/Entra
    /// token; `Some("servicebus.windows.net:sastoken")` for a SAS credential.
    cbs_token_type: Option<&'static str>,
    recoverable_connection: Weak<RecoverableConnection>,
    /// This is used to disable authorization for testing purposes.
    #[cfg(test)]
    disable_authorization: SyncMutex<bool>,
}

impl Authorizer {
    /// Creates an authorizer. `cbs_token_type` is `None` for JWT/Entra
    /// credentials and `Some("servicebus.windows.net:sastoken")` for SAS
    /// (connection-string) credentials.
    pub(crate) fn new(
        recoverable_connection: Weak<RecoverableConnection>,
        credential: Arc<dyn TokenCredential>,
        cbs_token_type: Option<&'static str>,
    ) -> Self {
        Self {
            authorization_refresher: SyncMutex::new(AuthorizationRefresherState::NotStarted),
            authorization_scopes: RwLock::new(HashMap::new()),
            token_refresh_bias: SyncMutex::new(TokenRefreshTimes::default()),
            credential,
            cbs_token_type,
            recoverable_connection,
            #[cfg(test)]
            disable_authorization: SyncMutex::new(false),
        }
    }

    pub(crate) async fn clear(&self) {
        debug!("Clearing authorization scopes.");
        let mut scopes = self.authorization_scopes.write().await;
        scopes.clear();
    }

    pub(crate) async fn stop_refresh_task(&self) {
        let task = {
            let mut state = self
                .authorization_refresher
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match std::mem::replace(&mut *state, AuthorizationRefresherState::Stopped) {
                AuthorizationRefresherState::Running(task) => Some(task),
                AuthorizationRefresherState::NotStarted | AuthorizationRefresherState::Stopped => {
                    None
                }
            }
        };

        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    #[cfg(test)]
    pub(crate) fn disable_authorization(&self) -> Result<()> {
        use crate::EventHubsError;

        let mut disable_authorization = self
            .disable_authorization
            .lock()
            .map_err(|e| EventHubsError::with_message(e.to_string()))?;
        *disable_authorization = true;
        Ok(())
    }

    /// Test hook: read the cached token for `path` without authorizing.
    ///
    /// A refresh replaces the map entry in place and only ever advances
    /// `expires_on`, so a test can watch one path's expiry to tell whether that
    /// specific path was refreshed. The shared `get_token` call count cannot make
    /// that distinction.
    #[cfg(test)]
    async fn peek_token(&self, path: &Url) -> Option<AccessToken> {
        self.authorization_scopes.read().await.get(path).cloned()
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        fields(
            connection_id = %connection.get_connection_id(),
            path = %path,
        ),
        err(level = "warn"),
    )]
    pub(crate) async fn authorize_path(
        self: &Arc<Self>,
        connection: &Arc<RecoverableConnection>,
        path: &Url,
    ) -> azure_core_amqp::Result<AccessToken> {
        debug!("Authorizing path: {path}");

        // #4454 stale-token guard. The token cache is mutable (the
        // refresh task rewrites entries), so unlike the connection caches it can't
        // use a `OnceCell`; the generation check is applied here directly. We
        // capture the connection's recovery generation before the lock-free CBS
        // attach and re-check it after: if a recovery cleared this cache and bumped
        // the generation mid-attach, the token we just authorized is bound to the
        // torn-down connection's CBS link, so we discard it and re-authorize
        // against the new connection instead of caching a stale entry (which the
        // next operation would otherwise use and fail on, costing a second recovery
        // cycle). `MAX_GENERATION_RETRIES` bounds the loop, so a storm of
        // back-to-back recoveries surfaces an error rather than spinning forever.
        for _ in 0..MAX_GENERATION_RETRIES {
            // Fast path: cached token under a brief lock.
            if let Some(token) = self.authorization_scopes.read().await.get(path).cloned() {
                debug!("Token already exists for path: {path}");
                return Ok(token);
            }

            let generation = connection.generation();

            // Slow path: fetch the credential and perform the CBS attach *without*
            // holding the scope cache lock. Holding it across `perform_authorization`
            // would block `clear()` (called from `recover_from_error`) for as long as
            // the CBS attach is in flight; if that CBS attach is itself the operation
            // that triggers recovery, the result is a self-deadlock. Matches the
            // pattern used by `ensure_sender` / `ensure_receiver` / `get_session` in
            // `RecoverableConnection`.
            debug!("Creating new authorization scope for path: {path}");

            debug!("Get Token.");
            let token = self
                .credential
                .get_token(&[EVENTHUBS_AUTHORIZATION_SCOPE], None)
                .await
                .map_err(AmqpError::from)?;

            debug!("Token for path {path} expires at {}", token.expires_on);

            self.perform_authorization(connection, path, &token).await?;
            debug!("Token verified.");

            // Insert under the write lock, but re-check the recovery generation
            // *inside* that lock before inserting. `clear()` (from
            // `recover_from_error`) takes this same lock and runs after the
            // generation bump, so re-reading the generation here, rather than before
            // acquiring the lock, closes the window where a recovery lands between
            // the check and the insert: we either observe the bump and discard, or
            // we hold the lock across the insert so no recovery can interleave. If a
            // recovery raced the lock-free attach above, the CBS link we authorized
            // against is gone, so we drop this token and retry against the new
            // generation rather than repopulating the just-cleared cache with a
            // stale entry (which the next operation would use and fail on, costing a
            // second recovery cycle). See #4454.
            let stored = {
                let mut scopes = self.authorization_scopes.write().await;
                if !connection.generation_is_current(generation) {
                    None
                } else {
                    // If another task won the race, return its cached token and drop
                    // ours. Both CBS auths succeeded against the same link, so either
                    // credential is acceptable to the broker.
                    Some(scopes.entry(path.clone()).or_insert(token).clone())
                }
            };
            let Some(stored) = stored else {
                debug!(
                    "Discarding token authorized during recovery (#4454) for path: {path}; re-authorizing."
                );
                continue;
            };

            let mut state = self
                .authorization_refresher
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if matches!(&*state, AuthorizationRefresherState::NotStarted) {
                debug!("Starting authorization refresh task.");
                let self_clone = self.clone();
                let async_runtime = get_async_runtime();
                *state = AuthorizationRefresherState::Running(
                    async_runtime.spawn(Box::pin(self_clone.refresh_tokens_task())),
                );
            }

            return Ok(stored);
        }

        // Intentionally a plain `AmqpError::with_message`: the connection's
        // `should_retry_amqp_error` classifies this unrecognized kind as
        // `ReturnError`, so exhausting the budget surfaces to the caller instead of
        // looping. Do not "fix" this into a retryable kind, that would let a recovery
        // storm spin here forever (#4454).
        Err(AmqpError::with_message(format!(
            "Exceeded retry budget ({MAX_GENERATION_RETRIES}) authorizing path '{path}' across recoveries"
        )))
    }

    /// Actually perform an authorization against the Event Hubs service.
    ///
    /// This method establishes a connection to the Event Hubs service and
    /// performs the necessary authorization steps using the provided token.
    ///
    /// # Arguments
    ///
    /// * `connection` - The AMQP connection to use for the authorization.
    /// * `url` - The URL of the resource being authorized.
    /// * `new_token` - The new access token to use for authorization.
    ///
    async fn perform_authorization(
        self: &Arc<Self>,
        connection: &Arc<RecoverableConnection>,
        url: &Url,
        new_token: &AccessToken,
    ) -> azure_core_amqp::Result<()> {
        // Test Hook: Disable interacting with Event Hubs service if the test doesn't want it.
        #[cfg(test)]
        {
            let disable_authorization = self.disable_authorization.lock().map_err(|e| {
                AmqpError::with_message(format!("Unable to grab disable mutex: {}", e))
            })?;
            if *disable_authorization {
                debug!("Authorization disabled for testing.");
                return Ok(());
            }
        }

        debug!("Performing authorization for {url}");

        connection
            .get_cbs_client()
            .authorize_path(
                url.to_string(),
                self.cbs_token_type.map(String::from),
                &new_token.token,
                new_token.expires_on,
            )
            .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn refresh_tokens_task(self: Arc<Self>) {
        // The refresh loop is the only thing keeping cached tokens alive; if it
        // ever returns, every cached token will silently expire. Per-path
        // get_token/authorization failures are handled (logged + retried) inside
        // refresh_tokens(), so reaching here means the loop hit a terminal
        // condition. An Err is a genuine fault (e.g. a poisoned lock) and is
        // surfaced at error!. An Ok(()) is the expected clean shutdown: the
        // recoverable connection was dropped, so there is nothing left to
        // refresh and info! is the right level.
        let result = self.refresh_tokens().await;
        match result {
            Err(e) => {
                error!(err = ?e, "Token refresher task exited with error; cached tokens will no longer be refreshed: {e}");
            }
            Ok(()) => {
                info!("Token refresher task stopped after the recoverable connection was dropped.");
            }
        }
    }

    /// Refresh the authorization tokens associated with this connection manager.
    ///
    /// Each connection manager maintains an authorization token for each
    /// resource it accesses, and this method ensures that all tokens are
    /// refreshed before their expiration.
    ///
    /// This method is designed to be called periodically to ensure that
    /// tokens are kept up to date.
    ///
    /// The first step in the refresh process is to gather the expiration times
    /// of all tokens. This allows us to determine when to refresh each token
    /// based on its expiration time.
    ///
    /// We calculate the first token to expire and sleep until it expires (with a bit of
    /// jitter in the sleep).
    ///
    /// After we wake up, we iterate over all the authorized paths and refresh their tokens with
    /// the Event Hubs service.
    async fn refresh_tokens(self: &Arc<Self>) -> Result<()> {
        debug!("Refreshing tokens.");
        // Paths whose credential cannot renew their token (e.g. a pre-formed
        // SAS supplied via a connection string): a refresh returns the same
        // expiry it already had. Excluding them keeps the loop from busy-
        // refreshing a token it cannot extend; the broker enforces the real
        // `se`, and recovery re-authorizes the path if the link later drops.
        let mut non_refreshable: HashSet<Url> = HashSet::new();
        loop {
            let mut expiration_times = vec![];
            {
                let scopes = self.authorization_scopes.read().await;
                for (path, token) in scopes.iter() {
                    if non_refreshable.contains(path) {
                        continue;
                    }
                    debug!(
                        "Token expiration time for path {}: {}",
                        path, token.expires_on
                    );
                    expiration_times.push(token.expires_on);
                }
            }
            expiration_times.sort();
            debug!("Found expiration times: {:?}", expiration_times);
            if expiration_times.is_empty() {
                debug!("No tokens to refresh. Sleeping for {TOKEN_REFRESH_BIAS:?}.");
                azure_core::sleep::sleep(TOKEN_REFRESH_BIAS).await;
                continue;
            }

            // Calculate duration until we should refresh (6 minutes before expiration,
            // with added random jitter)

            let mut now = OffsetDateTime::now_utc();
            trace!("refresh_tokens: Start pass for: {now}");
            let most_recent_refresh = expiration_times
                .first()
                .ok_or_else(|| AmqpError::with_message("No tokens to refresh?"))?;

            debug!(
                "Nearest token refresh time: {most_recent_refresh}, in {}",
                *most_recent_refresh - now
            );

            let refresh_time: OffsetDateTime;
            let token_refresh_bias: Duration;
            {
                let token_refresh_times = self.token_refresh_bias.lock().map_err(|e| {
                    AmqpError::with_message(format!(
                        "Unable to grab token refresh bias mutex: {}",
                        e
                    ))
                })?;

                debug!("Token refresh times: {token_refresh_times:?}");

                let jitter_min = token_refresh_times.jitter_min.whole_milliseconds() as i64;
                let jitter_max = token_refresh_times.jitter_max.whole_milliseconds() as i64;
                let expiration_jitter =
                    Duration::milliseconds(rng().random_range(jitter_min..jitter_max));
                debug!("Expiration jitter: {expiration_jitter:?}");

                token_refresh_bias = token_refresh_times
                    .before_expiration_refresh_time
                    .checked_add(expiration_jitter)
                    .ok_or_else(|| {
                        AmqpError::with_message("Unable to calculate token refresh bias - overflow")
                    })?;
                debug!("Token refresh bias with jitter: {token_refresh_bias:?}");

                refresh_time = most_recent_refresh
                    .checked_sub(token_refresh_bias)
                    .ok_or_else(|| {
                        AmqpError::with_message(
                            "Unable to calculate token refresh bias - underflow",
                        )
                    })?;
            }
            debug!("refresh_tokens: Refresh time: {refresh_time}");

            // Convert to a duration if refresh time is in the future and sleep until it's time
            // to refresh the token.
            if refresh_time > now {
                let sleep_duration = refresh_time - now;
                debug!(
                    "refresh_tokens: Sleeping for {sleep_duration:?} until {:?}",
                    now + sleep_duration
                );
                azure_core::sleep::sleep(sleep_duration).await;
                now = OffsetDateTime::now_utc();
            } else {
                debug!("Not sleeping because refresh time ({refresh_time}) is in the past (now = {now}).");
            }

            // Refresh every token that is due as of `now`, then write the fresh
            // tokens back, guarded against a racing recovery (#4454).
            match self
                .refresh_due_tokens(now, token_refresh_bias, &mut non_refreshable)
                .await?
            {
                RefreshPass::Stop => return Ok(()),
                RefreshPass::Completed { failed: false } => {}
                RefreshPass::Completed { failed: true } => {
                    // The failed path keeps its old `expires_on`, so its refresh
                    // time is still in the past and the top-of-loop sleep would be
                    // skipped. Back off for a bounded interval before the next pass
                    // so a persistent failure does not busy-spin on get_token /
                    // perform_authorization.
                    warn!(
                        backoff = ?TOKEN_REFRESH_RETRY_BACKOFF,
                        "One or more token refreshes failed this pass; backing off before retrying."
                    );
                    azure_core::sleep::sleep(TOKEN_REFRESH_RETRY_BACKOFF).await;
                }
                RefreshPass::Discarded => {
                    // A recovery advanced the generation mid-pass, so the pass
                    // dropped its refreshed tokens. Nothing failed, but the cache
                    // keeps the old tokens, so they stay due and the top-of-loop
                    // sleep would be skipped exactly as it is after a failed pass.
                    // Apply the same floor. `ReconnectSession` and `ReconnectLink`
                    // advance the generation and leave the token cache populated, so
                    // without this floor a recovery storm turns this loop into an
                    // uncapped stream of get_token and CBS calls (#4454).
                    warn!(
                        backoff = ?TOKEN_REFRESH_RETRY_BACKOFF,
                        "A recovery discarded the tokens refreshed this pass; backing off before retrying."
                    );
                    azure_core::sleep::sleep(TOKEN_REFRESH_RETRY_BACKOFF).await;
                }
            }
        }
    }

    /// One refresh pass: re-authorize every cached token that is within
    /// `token_refresh_bias` of expiring as of `now`, then write the fresh tokens
    /// back, guarded against a racing recovery.
    ///
    /// #4454: the refresh task is the token cache's second writer (alongside
    /// `authorize_path`), so it needs the same generation guard. We capture the
    /// recovery generation before the lock-free CBS re-authorizations below and
    /// re-check it under the write lock before writing the refreshed tokens back.
    /// If a recovery clears the token cache and bumps the generation mid-refresh,
    /// these tokens are bound to the torn-down connection; writing them back would
    /// repopulate the just-cleared cache with stale entries that the next operation
    /// would use and fail on. On a mismatch we drop them and let the next
    /// `authorize_path` re-establish fresh tokens against the new connection. A
    /// mismatch returns [`RefreshPass::Discarded`], so the caller applies the same
    /// backoff floor it applies to a failed pass; the cache keeps the old tokens,
    /// so they stay due and the next pass would otherwise start with no delay.
    ///
    /// `non_refreshable` is owned by the caller's loop and carries across passes:
    /// a path that lands in it is skipped by every later pass.
    ///
    /// Extracted from the `refresh_tokens` loop (which owns the expiry scheduling
    /// and sleeping) so the generation guard can be exercised deterministically in
    /// tests.
    async fn refresh_due_tokens(
        self: &Arc<Self>,
        now: OffsetDateTime,
        token_refresh_bias: Duration,
        non_refreshable: &mut HashSet<Url>,
    ) -> Result<RefreshPass> {
        // First, collect the tokens that need refreshing while holding the lock briefly
        let tokens_to_refresh = {
            let scopes = self.authorization_scopes.read().await;
            let mut to_refresh = Vec::new();
            for (url, token) in scopes.iter() {
                if non_refreshable.contains(url) {
                    continue;
                }
                if token.expires_on >= now + (token_refresh_bias) {
                    debug!(
                        "Token not expired for {url}: ExpiresOn: {}, Now: {now}, Bias: {token_refresh_bias:?}",
                        token.expires_on
                    );
                    continue;
                }

                debug!(
                    "Token about to be expired for {url}: ExpiresOn: {}, Now: {now}, Bias: {token_refresh_bias:?}",
                    token.expires_on
                );
                // Carry the current expiry so a refresh that does not extend
                // it can be detected as non-refreshable below.
                to_refresh.push((url.clone(), token.expires_on));
            }
            to_refresh
        };

        // Nothing due: skip the connection upgrade and lock dance entirely. Scoping
        // the work inside this branch keeps the connection and the recovery
        // generation as plain values that exist only where they are valid, so they
        // cannot drift out of sync (no hand-maintained `Option` invariant, no
        // `expect()` that a future edit could turn into a panic in this background
        // task and silently stop all token refresh).
        //
        // `refresh_failed` records whether any path failed this pass, so the caller
        // can back off instead of retrying with no delay.
        let mut refresh_failed = false;
        if !tokens_to_refresh.is_empty() {
            // A failed upgrade is terminal, not retryable: once the last strong
            // reference to the RecoverableConnection is dropped the Weak can never
            // upgrade again, so continuing would loop forever with nothing left to
            // refresh against. Stop the task.
            let Some(connection) = self.recoverable_connection.upgrade() else {
                info!(
                    operation = "upgrade_connection",
                    "Recoverable connection has been dropped; stopping token refresher."
                );
                return Ok(RefreshPass::Stop);
            };
            // Capture the recovery generation before the lock-free re-authorizations
            // below, so a recovery that races them is detected before write-back (#4454).
            let captured = connection.generation();

            // Refresh tokens without holding the scopes lock to avoid deadlocks.
            //
            // A failure to refresh a single path (transient get_token failure,
            // authorization failure, etc.) must NOT tear down the refresh task:
            // doing so would let every other cached token silently expire. We
            // log the failure at warn! with the path and the failing condition
            // and continue to the next path; the unrefreshed token will be
            // retried on the next pass.
            let mut updated_tokens = HashMap::new();
            for (url, previous_expiry) in tokens_to_refresh {
                let new_token = match self
                    .credential
                    .get_token(&[EVENTHUBS_AUTHORIZATION_SCOPE], None)
                    .await
                {
                    Ok(token) => token,
                    Err(e) => {
                        warn!(
                            path = %url,
                            operation = "get_token",
                            err = ?e,
                            "Failed to refresh token for path; will retry on next pass: {e}"
                        );
                        refresh_failed = true;
                        continue;
                    }
                };

                // A credential that cannot renew this token (e.g. a pre-formed
                // SAS) hands back the same expiry. Re-presenting it would not
                // extend the link, so mark the path non-refreshable and leave
                // the broker to enforce the real `se` rather than spinning.
                if new_token.expires_on <= previous_expiry {
                    warn!(
                        "Credential cannot refresh token for {url} (expiry did not advance past {previous_expiry}); \
                         relying on broker-side expiry. This is expected for a pre-formed SAS token."
                    );
                    non_refreshable.insert(url.clone());
                    continue;
                }

                if let Err(e) = self
                    .perform_authorization(&connection, &url, &new_token)
                    .await
                {
                    warn!(
                        path = %url,
                        operation = "perform_authorization",
                        err = ?e,
                        "Failed to authorize refreshed token for path; will retry on next pass: {e}"
                    );
                    refresh_failed = true;
                    continue;
                }

                debug!(
                    "Token refreshed for {url}, new expiration time: {}",
                    new_token.expires_on
                );
                updated_tokens.insert(url.clone(), new_token);
            }

            // Finally, update the scopes map with the new tokens, unless a recovery
            // raced us. Re-check the generation under the same write lock `clear()`
            // takes (#4454) before writing anything back.
            if !updated_tokens.is_empty() {
                let mut scopes = self.authorization_scopes.write().await;
                if !connection.generation_is_current(captured) {
                    debug!(
                        "Discarding tokens refreshed during recovery (#4454); a recovery overlapped the refresh."
                    );
                    // Report the discard to the caller so it applies the backoff
                    // floor. The cache keeps the old tokens, so they are still due
                    // and the next pass would start with no delay (#4454).
                    return Ok(RefreshPass::Discarded);
                }
                for (url, token) in updated_tokens.into_iter() {
                    scopes.insert(url.clone(), token);
                }
                debug!("Updated tokens.");
            }
        }

        Ok(RefreshPass::Completed {
            failed: refresh_failed,
        })
    }

    /// Test hook: hold the token cache's write lock. A recovery that clears the
    /// authorizer blocks inside [`Authorizer::clear`] until the guard is dropped,
    /// which gives a test a deterministic point part way through
    /// `apply_recovery_plan`. See `recovery_generation_differs_for_a_mid_recovery_capture`.
    #[cfg(test)]
    pub(crate) async fn lock_scopes_for_test(
        &self,
    ) -> async_lock::RwLockWriteGuard<'_, HashMap<Url, AccessToken>> {
        self.authorization_scopes.write().await
    }

    #[cfg(test)]
    fn set_token_refresh_times(&self, refresh_times: TokenRefreshTimes) -> Result<()> {
        let mut token_refresh_bias = self.token_refresh_bias.lock().map_err(|e| {
            AmqpError::with_message(format!("Unable to grab token refresh bias mutex: {}", e))
        })?;
        *token_refresh_bias = refresh_times;
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn set_token_refresh_bias_for_test(&self, bias: Duration) -> Result<()> {
        self.set_token_refresh_times(TokenRefreshTimes {
            before_expiration_refresh_time: bias,
            jitter_min: Duration::milliseconds(0),
            // The upper bound is exclusive. This range produces zero jitter
            // while avoiding an empty random range in the refresh loop.
            jitter_max: Duration::milliseconds(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::{credentials::TokenRequestOptions, http::Url, time::OffsetDateTime, Result};
    use azure_core_test::{recorded, TestContext};
    use std::sync::Arc;

    // Helper struct to mock token credential
    #[derive(Debug)]
    struct MockTokenCredential {
        /// Duration in seconds until the token expires
        token_duration: i64,

        /// The token itself
        /// This is a mock token, so we don't need to worry about the actual value
        token: SyncMutex<AccessToken>,

        /// Count of how many times the token has been requested
        /// This is used to verify that the token is being refreshed correctly
        /// in the tests
        get_token_count: SyncMutex<usize>,
    }

    impl MockTokenCredential {
        fn new(expires_in_seconds: i64) -> Arc<Self> {
            let expires_on = OffsetDateTime::now_utc() + Duration::seconds(expires_in_seconds);
            Arc::new(Self {
                token_duration: expires_in_seconds,
                token: SyncMutex::new(AccessToken::new(
                    azure_core::credentials::Secret::new("mock_token"),
                    expires_on,
                )),
                get_token_count: SyncMutex::new(0),
            })
        }

        fn get_token_get_count(&self) -> usize {
            *self.get_token_count.lock().unwrap()
        }
    }

    // The default authorizer presents a JWT (token type `None`); one built for
    // a SAS credential presents the `servicebus.windows.net:sastoken` type.
    #[test]
    fn cbs_token_type_defaults_to_jwt_and_can_be_sas() {
        let credential = MockTokenCredential::new(60);

        let jwt = Authorizer::new(Weak::new(), credential.clone(), None);
        assert_eq!(jwt.cbs_token_type, None);

        let sas = Authorizer::new(Weak::new(), credential, Some(crate::common::SAS_TOKEN_TYPE));
        assert_eq!(sas.cbs_token_type, Some("servicebus.windows.net:sastoken"));
    }

    #[async_trait::async_trait]
    impl TokenCredential for MockTokenCredential {
        async fn get_token(
            &self,
            _scopes: &[&str],
            _options: Option<TokenRequestOptions<'_>>,
        ) -> Result<AccessToken> {
            // Simulate a token refresh by incrementing the token get count
            // and updating the token expiration time
            {
                let mut count = self.get_token_count.lock().unwrap();
                *count += 1;
            }

            let expires_on = OffsetDateTime::now_utc() + Duration::seconds(self.token_duration);
            {
                let mut token = self.token.lock().unwrap();
                *token = AccessToken::new(
                    azure_core::credentials::Secret::new("mock_token"),
                    expires_on,
                );
                Ok(token.clone())
            }
        }
    }

    // Poll `get_token_get_count` until it reaches `target` or `timeout` elapses,
    // returning the last observed count either way.
    //
    // The token refresh task wakes on a real timer and only refreshes once the
    // sleep overshoots the scheduled instant, so the exact moment a refresh lands
    // drifts with scheduler latency. Reading the count at a single fixed instant
    // makes the timing tests flaky under load (the read can race ahead of a
    // refresh that is merely a little late). Waiting for the expected count keeps
    // the assertions deterministic without widening the race window: a refresh
    // that never happens still fails fast once the generous timeout expires.
    //
    // The deadline uses `tokio::time::Instant` rather than the wall clock, so a
    // clock correction cannot cut the wait short or stretch it past the bound.
    async fn wait_for_token_count(
        credential: &MockTokenCredential,
        target: usize,
        timeout: std::time::Duration,
    ) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let count = credential.get_token_get_count();
            if count >= target || tokio::time::Instant::now() >= deadline {
                return count;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    // Poll the cached token for `path` until its expiry advances past
    // `previous_expiry` or `timeout` elapses, returning the last observed expiry.
    //
    // `wait_for_token_count` watches a counter shared by every path, so it cannot
    // tell which path a refresh belonged to. Once a wait window is wide enough to
    // overlap another path's refresh, a count target can be reached by the wrong
    // path and the assertion passes for the wrong reason. A refresh replaces the
    // cache entry in place and only ever advances `expires_on` (a credential that
    // returns the same expiry is marked non-refreshable instead), so watching one
    // path's expiry ties each assertion to the path it names.
    async fn wait_for_token_refresh(
        authorizer: &Arc<Authorizer>,
        path: &Url,
        previous_expiry: OffsetDateTime,
        timeout: std::time::Duration,
    ) -> Option<OffsetDateTime> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let expiry = authorizer.peek_token(path).await.map(|t| t.expires_on);
            if expiry.is_some_and(|e| e > previous_expiry)
                || tokio::time::Instant::now() >= deadline
            {
                return expiry;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    // When a token is created, it needs to have a proper expiration time.
    // This test verifies that the expiration time of tokens is set correctly when
    // authorizing a path. It also confirms that tokens are properly stored for reuse
    // and that their expiration times are within the expected range.
    //
    // In production, incorrect token expiration could lead to authentication failures
    // or excessive token refresh operations, so this verification is critical.
    #[recorded::test]
    async fn token_credential_expiration(_ctx: TestContext) -> Result<()> {
        let url = Url::parse("amqps://example.com").unwrap();
        let path = Url::parse("amqps://example.com/test_token_credential_expiration").unwrap();

        // Create a mock token credential that expires in 15 seconds
        let mock_credential = MockTokenCredential::new(15);

        let connection_manager = RecoverableConnection::new(
            url,
            None,
            None,
            azure_core_amqp::AmqpTransport::default(),
            mock_credential.clone(),
            Default::default(),
            None,
        );

        let authorizer = Arc::new(Authorizer::new(
            Arc::downgrade(&connection_manager),
            mock_credential.clone(),
            None,
        ));

        // Disable actual authorization for testing
        authorizer.disable_authorization().unwrap();

        connection_manager.disable_connection().await.unwrap();

        // Expire tokens 10 seconds before they would normally expire.
        // The token in question expires in 15 seconds, so we want to refresh it before then.
        authorizer
            .set_token_refresh_times(TokenRefreshTimes {
                before_expiration_refresh_time: Duration::seconds(10),
                ..Default::default()
            })
            .unwrap();

        // This should succeed and store the token in the authorization scopes
        let result = authorizer.authorize_path(&connection_manager, &path).await;
        println!("Result: {:?}", result);
        assert!(result.is_ok());

        // Verify token is stored
        let scopes = authorizer.authorization_scopes.read().await;
        assert!(scopes.contains_key(&path));

        // Verify expiration time
        let stored_token = scopes.get(&path).unwrap();
        let now = OffsetDateTime::now_utc();
        assert!(stored_token.expires_on > now);
        assert!(stored_token.expires_on < now + Duration::seconds(15)); // Should be less than now + 15 seconds
        Ok(())
    }

    // The RecoverableConnection automatically refreshes tokens before they expire.
    // This is a critical feature for long-running connections, as it prevents
    // authentication failures due to expired tokens.
    //
    // This test verifies that the token refresh mechanism works correctly by:
    // 1. Creating a mock credential with a short expiration time
    // 2. Setting up the token refresh interval to be shorter than the token expiration
    // 3. Waiting long enough for a refresh to happen
    // 4. Verifying that additional token requests were made to the credential
    //
    // If this feature fails in production, clients would disconnect when their tokens expire,
    // which could lead to data loss, application failures, or service degradation.
    #[recorded::test]
    async fn token_refresh(_ctx: TestContext) -> Result<()> {
        let url = Url::parse("amqps://example.com").unwrap();
        let path = Url::parse("amqps://example.com/test_token_refresh").unwrap();

        // Create a mock token credential with a very short expiration (20 seconds)
        let mock_credential = MockTokenCredential::new(20);
        let connection_manager = RecoverableConnection::new(
            url,
            None,
            None,
            azure_core_amqp::AmqpTransport::default(),
            mock_credential.clone(),
            Default::default(),
            None,
        );

        connection_manager.disable_connection().await.unwrap();

        // Get initial token get count
        let initial_count = mock_credential.get_token_get_count();
        assert_eq!(initial_count, 0);

        let authorizer = Arc::new(Authorizer::new(
            Arc::downgrade(&connection_manager),
            mock_credential.clone(),
            None,
        ));

        // Disable actual authorization for testing
        authorizer.disable_authorization().unwrap();
        connection_manager.disable_connection().await.unwrap();

        // Set token refresh times to 10 seconds before expiration with default jitter.
        // This means we will refresh the token somewhere between 8 and 12 seconds before it expires.
        // The token in question expires in 20 seconds, so we want to refresh it before then.
        authorizer
            .set_token_refresh_times(TokenRefreshTimes {
                before_expiration_refresh_time: Duration::seconds(10),
                jitter_min: Duration::seconds(-2), // 2 seconds in milliseconds
                jitter_max: Duration::seconds(2),  // 2 seconds in milliseconds
            })
            .unwrap();

        // Authorize the path, which will store the token
        authorizer
            .authorize_path(&connection_manager, &path)
            .await
            .unwrap();

        // Verify initial token retrieval count - we will only have authorized the token once.
        let current_count = mock_credential.get_token_get_count();
        assert_eq!(current_count, 1);

        trace!("Waiting for the token to expire and be refreshed. Current token count: {current_count}");

        // The token expires in 20 seconds and refreshes 8 to 12 seconds before
        // that, so the refresh lands 8 to 12 seconds from now. Wait for the count
        // to reach 2 instead of reading it at a fixed instant, because the exact
        // moment the refresh lands drifts with scheduler latency.
        let final_count =
            wait_for_token_count(&mock_credential, 2, std::time::Duration::from_secs(25)).await;
        trace!("After waiting, token count: {final_count}");

        assert!(
            final_count >= 2,
            "Expected token get count to be greater or equal to 2, but got {final_count}"
        );
        trace!("Final token get count: {final_count}");
        Ok(())
    }

    #[recorded::test]
    async fn multiple_token_refresh(_ctx: TestContext) -> Result<()> {
        let host = Url::parse("amqps://example.com").unwrap();
        // Create a mock token credential with a very short expiration (20 seconds) - we choose 20 seconds because we configure the token refresh bias (the time before expiration we will attempt a refresh to 5 seconds and there's a +- 5 second
        let mock_credential = MockTokenCredential::new(20);
        let recoverable_connection = Arc::new(RecoverableConnection::new(
            host.clone(),
            None,
            None,
            azure_core_amqp::AmqpTransport::default(),
            mock_credential.clone(),
            Default::default(),
            None,
        ));
        let authorizer = Arc::new(Authorizer::new(
            Arc::downgrade(&recoverable_connection),
            mock_credential.clone(),
            None,
        ));

        // Get initial token get count
        let initial_count = mock_credential.get_token_get_count();
        assert_eq!(initial_count, 0);

        // Disable actual authorization for testing
        authorizer.disable_authorization().unwrap();

        recoverable_connection.disable_connection().await.unwrap();

        // We will refresh the token 5 seconds before it expires (with jitter).
        // The token in question expires in 15 seconds, so we want to refresh it before then.
        // In practice, this means that we can guarantee that the token will be refreshed
        // between 4 and 6 seconds before it expires.
        authorizer
            .set_token_refresh_times(TokenRefreshTimes {
                before_expiration_refresh_time: Duration::seconds(5),
                jitter_min: Duration::milliseconds(-500),
                jitter_max: Duration::milliseconds(500),
            })
            .unwrap();

        // Authorize the path, which will store the token
        let path1 = Url::parse("amqps://example.com/test_token_refresh_1").unwrap();
        // Get access to the connection
        //let connection = connection_manager.ensure_connection().await.unwrap();
        let path1_expiry = authorizer
            .authorize_path(&recoverable_connection, &path1)
            .await
            .unwrap()
            .expires_on;

        // Because the token expires in 20 seconds, token_refresh_1 will be refreshed
        // between 14 and 16 seconds from now.

        // The second token expires after the first token.
        trace!("Sleeping for 10 seconds to establish separation between token_refresh_1 and token_refresh_2.");
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;

        // Authorize the second path, which will store the token
        let path2 = Url::parse("amqps://example.com/test_token_refresh_2").unwrap();
        let path2_expiry = authorizer
            .authorize_path(&recoverable_connection, &path2)
            .await
            .unwrap()
            .expires_on;

        // Verify initial token retrieval count - it should have been refreshed three times -
        let current_count = mock_credential.get_token_get_count();
        // Two paths are authorized, so we called get_token twice.
        assert_eq!(current_count, initial_count + 2);

        // Token_refresh_1 will be refreshed between 4 and 6 seconds from now.
        // Token_refresh_2 will be refreshed between 14 and 16 from now.
        //
        // Wait on path1's own expiry rather than the shared call count. The count
        // cannot say which path was refreshed, and the second wait below is wide
        // enough to overlap path1's next refresh, so a count target there could be
        // reached by path1 even if path2 never refreshed.
        trace!("Waiting for token_refresh_1 to expire and be refreshed. Current token count: {current_count}");
        let refreshed1 = wait_for_token_refresh(
            &authorizer,
            &path1,
            path1_expiry,
            std::time::Duration::from_secs(12),
        )
        .await;
        assert!(
            refreshed1.is_some_and(|e| e > path1_expiry),
            "Expected token_refresh_1 to be refreshed (expiry to advance past {path1_expiry}), but got {refreshed1:?}"
        );

        // Only path1 is due in this window, so exactly one refresh has landed.
        let final_count = mock_credential.get_token_get_count();
        trace!("After waiting the first time, token count: {final_count}");
        assert!(
            final_count >= 3,
            "Expected token_refresh_1 to be refreshed (count >= 3), but got {final_count}"
        );

        trace!("First token expiration get count: {}", final_count);
        // Token_refresh_1 will be refreshed between 13 and 15 seconds from now.
        // Token_refresh_2 will be refreshed between 7 and 9 seconds from now.

        // Wait for token_refresh_2 to be refreshed. It refreshes ~7-9s from now;
        // the timeout is generous so that scheduler latency under load delays the
        // test rather than failing it. Waiting on path2's own expiry keeps the
        // assertion honest even though this window also covers path1's next
        // refresh.
        let refreshed2 = wait_for_token_refresh(
            &authorizer,
            &path2,
            path2_expiry,
            std::time::Duration::from_secs(20),
        )
        .await;
        assert!(
            refreshed2.is_some_and(|e| e > path2_expiry),
            "Expected token_refresh_2 to be refreshed (expiry to advance past {path2_expiry}), but got {refreshed2:?}"
        );

        let final_count = mock_credential.get_token_get_count();
        trace!("Getting second token count: {final_count}");
        assert!(
            final_count >= 4,
            "Expected token_refresh_2 to be refreshed (count >= 4), but got {final_count}"
        );
        trace!("Second token expiration get count: {}", final_count);

        Ok(())
    }

    // A pre-formed SAS token cannot be re-signed, so its credential returns the
    // same expiry on every call. The refresher must detect this non-advancing
    // expiry, attempt the refresh at most once, and then stop, rather than
    // spinning and re-presenting a non-renewable token to the broker on a tight
    // loop. This pins the non-refreshable handling in `refresh_tokens`.
    #[tokio::test(flavor = "multi_thread")]
    async fn non_refreshable_token_is_refreshed_at_most_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};

        #[derive(Debug)]
        struct FixedExpiryCredential {
            expires_on: OffsetDateTime,
            calls: AtomicUsize,
        }

        #[async_trait::async_trait]
        impl TokenCredential for FixedExpiryCredential {
            async fn get_token(
                &self,
                _scopes: &[&str],
                _options: Option<TokenRequestOptions<'_>>,
            ) -> azure_core::Result<AccessToken> {
                self.calls.fetch_add(1, Ordering::SeqCst);
                Ok(AccessToken::new(
                    azure_core::credentials::Secret::new("mock_token"),
                    self.expires_on,
                ))
            }
        }

        let credential = Arc::new(FixedExpiryCredential {
            expires_on: OffsetDateTime::now_utc() + Duration::seconds(8),
            calls: AtomicUsize::new(0),
        });

        let url = Url::parse("amqps://example.com").unwrap();
        let connection = RecoverableConnection::new(
            url.clone(),
            None,
            None,
            Default::default(),
            credential.clone(),
            Default::default(),
            None,
        );
        connection.disable_connection().await.unwrap();

        let authorizer = Arc::new(Authorizer::new(
            Arc::downgrade(&connection),
            credential.clone(),
            None,
        ));
        authorizer.disable_authorization().unwrap();

        // Refresh ~3s before the 8s expiry, so a refresh is attempted ~5s in.
        authorizer
            .set_token_refresh_times(TokenRefreshTimes {
                before_expiration_refresh_time: Duration::seconds(3),
                jitter_min: Duration::milliseconds(-500),
                jitter_max: Duration::milliseconds(500),
            })
            .unwrap();

        let path = Url::parse("amqps://example.com/preformed").unwrap();
        authorizer.authorize_path(&connection, &path).await.unwrap();
        assert_eq!(credential.calls.load(Ordering::SeqCst), 1);

        // Sleep well past the refresh point. Without the non-refreshable guard
        // the refresher would re-call `get_token` on a tight loop (many calls);
        // with it, the path is marked non-refreshable after a single attempt.
        tokio::time::sleep(std::time::Duration::from_secs(7)).await;

        let calls = credential.calls.load(Ordering::SeqCst);
        assert!(
            (2..=5).contains(&calls),
            "expected one refresh attempt then stop, but get_token was called {calls} times"
        );

        // The token stays available for the path; the broker enforces the real
        // `se`. The cached read does not call `get_token` again.
        let stored = authorizer.authorize_path(&connection, &path).await.unwrap();
        assert_eq!(stored.expires_on, credential.expires_on);
        assert_eq!(credential.calls.load(Ordering::SeqCst), calls);
    }

    // Regression test for the self-deadlock described in
    // https://github.com/Azure/azure-sdk-for-rust/issues/4414.
    //
    // Before the fix, `authorize_path` held the `authorization_scopes` async
    // mutex across `credential.get_token().await` and the CBS attach. If the
    // in-flight CBS call failed and triggered `recover_from_error`, recovery
    // would call `authorizer.clear().await`, which tries to acquire the same
    // mutex; that call blocked forever because the task holding the mutex was
    // suspended inside the call that needed recovery.
    //
    // This test reproduces the lock-during-IO shape with a credential whose
    // `get_token` blocks until released. We spawn `authorize_path` and, once
    // it has entered the slow path, race a `clear()` against it. With the
    // bug, `clear()` would never return; with the fix, it returns promptly
    // because the slow path runs lock-free.
    #[tokio::test]
    async fn authorize_path_does_not_block_clear() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::sync::Notify;

        #[derive(Debug)]
        struct GatedCredential {
            entered: AtomicBool,
            release: Notify,
        }

        #[async_trait::async_trait]
        impl TokenCredential for GatedCredential {
            async fn get_token(
                &self,
                _scopes: &[&str],
                _options: Option<TokenRequestOptions<'_>>,
            ) -> azure_core::Result<AccessToken> {
                self.entered.store(true, Ordering::SeqCst);
                self.release.notified().await;
                Ok(AccessToken::new(
                    azure_core::credentials::Secret::new("mock_token"),
                    OffsetDateTime::now_utc() + Duration::seconds(60),
                ))
            }
        }

        let credential = Arc::new(GatedCredential {
            entered: AtomicBool::new(false),
            release: Notify::new(),
        });

        let url = Url::parse("amqps://example.com").unwrap();
        let connection = RecoverableConnection::new(
            url.clone(),
            None,
            None,
            azure_core_amqp::AmqpTransport::default(),
            credential.clone(),
            Default::default(),
            None,
        );

        let authorizer = Arc::new(Authorizer::new(
            Arc::downgrade(&connection),
            credential.clone(),
            None,
        ));
        authorizer.disable_authorization().unwrap();
        connection.disable_connection().await.unwrap();

        let path = Url::parse("amqps://example.com/test").unwrap();

        let auth_task = {
            let authorizer = authorizer.clone();
            let connection = connection.clone();
            let path = path.clone();
            tokio::spawn(async move { authorizer.authorize_path(&connection, &path).await })
        };

        // Wait for the spawned task to enter the credential's gated `get_token`.
        // At this point the bug would have it holding the authorization_scopes
        // mutex; the fix has already released it.
        while !credential.entered.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }

        // `clear()` must not block on the in-flight authorization. A 2s budget
        // is generous; the operation should complete in microseconds.
        tokio::time::timeout(std::time::Duration::from_secs(2), authorizer.clear())
            .await
            .expect("authorizer.clear() blocked while authorize_path was mid-IO");

        // Let the in-flight authorization complete and verify it returns.
        credential.release.notify_one();
        auth_task
            .await
            .expect("authorize_path task panicked")
            .expect("authorize_path returned an error");
    }

    // #4454: when a recovery races an in-flight `authorize_path` slow path, the
    // token authorized against the now-dead CBS link must be discarded and the
    // path re-authorized against the new connection, rather than cached and handed
    // out stale.
    //
    // The token cache is mutable (the refresh task rewrites it), so it cannot use
    // an `OnceCell` like the connection caches; `authorize_path` guards itself with
    // the connection's recovery generation instead. This test drives that guard
    // deterministically: a gated credential blocks the first `get_token` so the
    // test can fire a simulated reconnect (which bumps the generation) precisely
    // during the lock-free authorization window. The first attempt's token must be
    // thrown away and a second authorization performed; the cached token must be
    // the second one, stamped at the post-recovery generation.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn authorize_path_discards_token_authorized_during_recovery() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

        #[derive(Debug)]
        struct CountingGatedCredential {
            calls: AtomicUsize,
            first_call_entered: AtomicBool,
            release_first_call: AtomicBool,
        }

        #[async_trait::async_trait]
        impl TokenCredential for CountingGatedCredential {
            async fn get_token(
                &self,
                _scopes: &[&str],
                _options: Option<TokenRequestOptions<'_>>,
            ) -> azure_core::Result<AccessToken> {
                let call = self.calls.fetch_add(1, Ordering::SeqCst);
                // Gate only the first call so the test can interleave a recovery
                // while the slow path is mid-authorization. Later calls (the
                // re-authorization) proceed immediately.
                if call == 0 {
                    self.first_call_entered.store(true, Ordering::SeqCst);
                    while !self.release_first_call.load(Ordering::SeqCst) {
                        tokio::task::yield_now().await;
                    }
                }
                // Far-future expiry so the spawned refresh task sleeps on its first
                // pass instead of immediately re-fetching (which would add a third,
                // racy `get_token` call and make the exact-count assert flaky).
                Ok(AccessToken::new(
                    azure_core::credentials::Secret::new("mock_token"),
                    OffsetDateTime::now_utc() + Duration::hours(1),
                ))
            }
        }

        let credential = Arc::new(CountingGatedCredential {
            calls: AtomicUsize::new(0),
            first_call_entered: AtomicBool::new(false),
            release_first_call: AtomicBool::new(false),
        });

        let url = Url::parse("amqps://example.com").unwrap();
        let connection = RecoverableConnection::new(
            url.clone(),
            None,
            None,
            azure_core_amqp::AmqpTransport::default(),
            credential.clone(),
            Default::default(),
            None,
        );

        let authorizer = Arc::new(Authorizer::new(
            Arc::downgrade(&connection),
            credential.clone(),
            None,
        ));
        // Skip the real CBS attach; we are exercising the generation guard, not the
        // broker handshake.
        authorizer.disable_authorization().unwrap();
        connection.disable_connection().await.unwrap();

        let path = Url::parse("amqps://example.com/test").unwrap();

        let auth_task = {
            let authorizer = authorizer.clone();
            let connection = connection.clone();
            let path = path.clone();
            tokio::spawn(async move { authorizer.authorize_path(&connection, &path).await })
        };

        // Wait until the slow path is inside the first (gated) get_token: it has
        // captured the pre-recovery generation and is mid-authorization.
        while !credential.first_call_entered.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        assert_eq!(connection.generation(), 0);

        // Fire a recovery now, in the lock-free window. This advances the generation
        // past one whole recovery, exactly the race #4454 describes. We advance the
        // generation directly rather than running the full `simulate_reconnect`,
        // because clearing the caches is irrelevant to the token guard and keeps the
        // test focused.
        connection.bump_generation_for_test();
        assert_eq!(connection.generation(), 2);

        // Release the first authorization; its token is now stale and must be
        // discarded, triggering a re-authorization against the new generation.
        credential.release_first_call.store(true, Ordering::SeqCst);

        let token = auth_task
            .await
            .expect("authorize_path task panicked")
            .expect("authorize_path returned an error");

        // Two get_token calls: the discarded first attempt and the clean retry.
        assert_eq!(
            credential.calls.load(Ordering::SeqCst),
            2,
            "expected exactly one discard-and-retry"
        );

        // The token returned is cached and stamped at the stable post-recovery
        // generation; the next lookup is a clean fast-path hit, with no further
        // recovery needed.
        let cached = authorizer
            .authorization_scopes
            .read()
            .await
            .get(&path)
            .cloned();
        assert!(
            cached.is_some(),
            "a fresh token must be cached after the discard-and-retry"
        );
        assert_eq!(cached.unwrap().token.secret(), token.token.secret());
        assert_eq!(
            connection.generation(),
            2,
            "no second recovery cycle should have been needed"
        );
    }

    // #4454: the background refresh task is the token cache's *second* writer
    // (alongside `authorize_path`), and it needs the same generation guard. When a
    // recovery races a refresh, the token re-authorized against the now-dead CBS
    // link must be discarded, not written back over the cache the recovery just
    // cleared, otherwise the next operation serves a stale token and forces a
    // second recovery cycle.
    //
    // This drives the guard deterministically by calling the extracted single-pass
    // `refresh_due_tokens`: the cache is seeded with a token that is already due,
    // a gated credential blocks the refresh's `get_token` inside the lock-free
    // window, the test fires a simulated reconnect (bumping the generation) there,
    // then releases. The refreshed token must be thrown away and the original left
    // untouched.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refresh_discards_tokens_refreshed_during_recovery() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

        #[derive(Debug)]
        struct GatedRefreshCredential {
            calls: AtomicUsize,
            entered: AtomicBool,
            release: AtomicBool,
        }

        #[async_trait::async_trait]
        impl TokenCredential for GatedRefreshCredential {
            async fn get_token(
                &self,
                _scopes: &[&str],
                _options: Option<TokenRequestOptions<'_>>,
            ) -> azure_core::Result<AccessToken> {
                self.calls.fetch_add(1, Ordering::SeqCst);
                self.entered.store(true, Ordering::SeqCst);
                // Block inside the lock-free refresh window so the test can fire a
                // recovery before the refreshed token is written back.
                while !self.release.load(Ordering::SeqCst) {
                    tokio::task::yield_now().await;
                }
                Ok(AccessToken::new(
                    azure_core::credentials::Secret::new("refreshed_token"),
                    OffsetDateTime::now_utc() + Duration::hours(1),
                ))
            }
        }

        let credential = Arc::new(GatedRefreshCredential {
            calls: AtomicUsize::new(0),
            entered: AtomicBool::new(false),
            release: AtomicBool::new(false),
        });

        let url = Url::parse("amqps://example.com").unwrap();
        let connection = RecoverableConnection::new(
            url.clone(),
            None,
            None,
            azure_core_amqp::AmqpTransport::default(),
            credential.clone(),
            Default::default(),
            None,
        );
        let authorizer = Arc::new(Authorizer::new(
            Arc::downgrade(&connection),
            credential.clone(),
            None,
        ));
        // Exercise the generation guard, not the broker handshake.
        authorizer.disable_authorization().unwrap();
        connection.disable_connection().await.unwrap();

        // Seed the cache with an "original" token that is already due for refresh.
        let path = Url::parse("amqps://example.com/test").unwrap();
        let now = OffsetDateTime::now_utc();
        let original = AccessToken::new(
            azure_core::credentials::Secret::new("original_token"),
            now + Duration::seconds(1),
        );
        authorizer
            .authorization_scopes
            .write()
            .await
            .insert(path.clone(), original);

        // A 10s bias makes the 1s-from-now token due, so the pass refreshes it.
        let bias = Duration::seconds(10);
        let refresh_task = {
            let authorizer = authorizer.clone();
            tokio::spawn(async move {
                let mut non_refreshable = HashSet::new();
                authorizer
                    .refresh_due_tokens(now, bias, &mut non_refreshable)
                    .await
            })
        };

        // Wait until the refresh is inside the gated `get_token`: it has captured
        // the pre-recovery generation and is mid re-authorization.
        while !credential.entered.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        assert_eq!(connection.generation(), 0);

        // Fire a recovery in the lock-free window: the #4454 race, refresh edition.
        connection.bump_generation_for_test();
        assert_eq!(connection.generation(), 2);

        // Release the gated refresh; its token is now stale and must be discarded.
        credential.release.store(true, Ordering::SeqCst);
        let outcome = refresh_task
            .await
            .expect("refresh task panicked")
            .expect("refresh_due_tokens returned an error");

        // The pass must report the discard, not a clean completion. The caller
        // backs off on `Discarded`, and it must: the cache still holds the due
        // original token, so a `Completed { failed: false }` here would send the
        // refresh loop straight back around with no sleep, once for every
        // generation bump a recovery storm produces (#4454).
        assert_eq!(
            outcome,
            RefreshPass::Discarded,
            "a pass whose tokens a recovery discarded must ask the caller to back off"
        );

        // Exactly one refresh attempt was made, and the cache still holds the
        // original token: the token refreshed against the torn-down connection was
        // dropped at the guarded write-back rather than overwriting the cache.
        assert_eq!(
            credential.calls.load(Ordering::SeqCst),
            1,
            "exactly one refresh attempt"
        );
        let cached = authorizer
            .authorization_scopes
            .read()
            .await
            .get(&path)
            .cloned()
            .expect("the original token must remain cached");
        assert_eq!(
            cached.token.secret(),
            "original_token",
            "a token refreshed during recovery must be discarded, not written back"
        );
    }
}
