//! XOAUTH2 tokens for the delivery agent: the account settings and the
//! token cache of `queue::oauth2` (shared on disk by every agent process,
//! one refresh at a time per token), behind the [`TokenSource`] the AUTH
//! exchange uses. Requests to the token endpoint block, so they run on the
//! runtime's blocking threads.

use crate::auth::{TokenError, TokenSource};
use proto::sasl::Secret;
use queue::oauth2::{Accounts, Token, TokenCache};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

/// Tokens from the OAuth2 endpoint of each account.
#[derive(Debug)]
pub struct OAuthTokens {
    accounts: Arc<Accounts>,
    cache: Arc<TokenCache>,
}

/// True when OAuth2 is configured at all: a token endpoint in main.cf or
/// per-account settings (XOAUTH2 is offered to servers only then).
pub fn configured(cfg: &conf::Config) -> bool {
    !cfg.smtp_oauth2_token_endpoint.is_empty() || !cfg.smtp_oauth2_account_maps.is_empty()
}

impl OAuthTokens {
    /// The token source, when OAuth2 is [`configured`]; `Err` when its
    /// tables do not open.
    pub fn from_config(cfg: &conf::Config) -> Option<Result<OAuthTokens, String>> {
        if !configured(cfg) {
            return None;
        }
        Some(
            Accounts::open(cfg)
                .map(|accounts| OAuthTokens {
                    accounts: Arc::new(accounts),
                    cache: Arc::new(TokenCache::new(cfg)),
                })
                .map_err(|e| e.to_string()),
        )
    }
}

impl TokenSource for OAuthTokens {
    fn token<'a>(
        &'a self,
        user: &'a str,
        rejected: Option<&'a Secret>,
    ) -> Pin<Box<dyn Future<Output = Result<Secret, TokenError>> + Send + 'a>> {
        let accounts = self.accounts.clone();
        let cache = self.cache.clone();
        let user = user.to_string();
        // Only the refused value matters: any other token is newer.
        let rejected = rejected.map(|s| Token {
            access_token: s.clone(),
            expires_at: SystemTime::UNIX_EPOCH,
            obtained_at: SystemTime::UNIX_EPOCH,
        });
        Box::pin(async move {
            let work = tokio::task::spawn_blocking(move || {
                let account = accounts.get(&user).map_err(|e| TokenError {
                    message: e.to_string(),
                    needs_admin: true,
                })?;
                cache
                    .token(&account, rejected.as_ref())
                    .map(|t| t.access_token)
                    .map_err(|e| TokenError {
                        message: format!("OAuth2 token for {user}: {e}"),
                        needs_admin: !e.is_transient(),
                    })
            });
            work.await.map_err(|e| TokenError {
                message: format!("OAuth2 token request failed: {e}"),
                needs_admin: false,
            })?
        })
    }
}
