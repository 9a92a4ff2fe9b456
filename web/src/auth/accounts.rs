//! Creating accounts: name and password rules, hashing, insertion. Used by
//! `/setup`, the `restic-manager user add` command and the users API.

use super::{Role, password};

/// Why an account was not created.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    /// Bad input: which field, and why.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("an account named {0:?} exists already")]
    Taken(String),
    /// First-run setup only: an account appeared meanwhile.
    #[error("an account exists already")]
    NotFirst,
    #[error(transparent)]
    Store(#[from] rm_store::StoreError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Checks an account name: 1 to 64 characters, no spaces at either end, no
/// control characters.
pub fn check_name(name: &str) -> Result<(), AddError> {
    let invalid = |m: &str| AddError::Invalid {
        field: "name",
        message: m.to_owned(),
    };
    if name.is_empty() || name.chars().count() > 64 {
        return Err(invalid("the name needs 1 to 64 characters"));
    }
    if name.trim() != name || name.chars().any(char::is_control) {
        return Err(invalid(
            "the name may not start or end with spaces or contain control characters",
        ));
    }
    Ok(())
}

/// Creates an account; returns its id. With `first_only`, only while no
/// account exists (first-run setup).
pub async fn add(
    store: &rm_store::Store,
    now: i64,
    name: &str,
    role: Role,
    password_text: &str,
    first_only: bool,
) -> Result<String, AddError> {
    check_name(name)?;
    password::check_strength(password_text).map_err(|message| AddError::Invalid {
        field: "password",
        message,
    })?;
    let hash = password::hash_async(password_text.to_owned()).await?;
    let id = format!("usr_{}", super::random_token(9));
    let new = rm_store::users::NewUser {
        id: &id,
        username: name,
        password_hash: &hash,
        role: role.as_str(),
        now,
    };
    let mut tx = store.write().await?;
    if first_only {
        if !rm_store::users::insert_first(&mut tx, &new).await? {
            return Err(AddError::NotFirst);
        }
    } else if let Err(e) = rm_store::users::insert(&mut tx, &new).await {
        return Err(if e.is_unique_violation() {
            AddError::Taken(name.to_owned())
        } else {
            e.into()
        });
    }
    tx.commit().await.map_err(rm_store::StoreError::from)?;
    Ok(id)
}
