//! `users`: the accounts that may log in, keyed by username, and
//! `permission_groups`: named page allow-lists accounts may belong to.
//! The store knows nothing of passwords beyond the stored hash; it does
//! own the rules that must hold across writers: the fleet always keeps at
//! least one enabled admin, an account's group exists, and a group with
//! members is not deleted. redb serialises write transactions, so checking
//! and applying a change in one transaction cannot race.

use chrono::{DateTime, Utc};
use redb::{
    ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::RelationalStore;
use crate::{Error, Result};

pub(super) const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
pub(super) const NAME: &str = "users";
const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("permission_groups");
const GROUPS_NAME: &str = "permission_groups";
const SETUP: TableDefinition<&str, &[u8]> = TableDefinition::new("password_setup_tokens");
const SETUP_NAME: &str = "password_setup_tokens";

/// The role string that counts for the last-admin rule.
pub const ADMIN_ROLE: &str = "admin";

/// One account as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct UserRecord {
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
    pub disabled: bool,
    pub must_change_pw: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Login tokens carry the epoch they were minted in; a password
    /// change or reset moves it on, which ends every earlier token.
    /// Accounts stored before it existed (and imported ones) start at 0.
    pub token_epoch: u64,
    /// The TOTP secret (base32, as the reference stores it); `None`
    /// without a second factor.
    pub totp_secret: Option<String>,
    /// The last TOTP time step a code of this account was accepted for: a
    /// code of that step or an earlier one is refused (single use).
    pub totp_last_step: u64,
    /// Contact address (password links go there).
    pub email: Option<String>,
    /// The pages (feature keys) the account may use; `None`: all.
    /// Overridden by `permission_group` when that is set.
    pub allowed_features: Option<Vec<String>>,
    /// The permission group whose pages the account may use.
    pub permission_group: Option<String>,
    /// The WebAuthn user handle (a UUID) the account's passkeys carry;
    /// made at its first passkey registration, kept for its lifetime.
    pub passkey_handle: Option<String>,
    /// Moves on whenever what a passkey registration re-authenticated
    /// with changes (password, second factor) or an admin removes the
    /// account's passkeys: a registration started before cannot finish.
    pub passkey_epoch: u64,
}

/// A password set-up or reset link as stored: the SHA-256 of its token
/// (never the token), whose account, why, and until when it works.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct PasswordSetupRecord {
    pub token_hash: String,
    pub username: String,
    /// `setup` (a new account) or `reset`.
    pub purpose: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// What a link token is.
#[derive(Debug, Clone, PartialEq)]
pub enum SetupLookup {
    Valid(PasswordSetupRecord),
    Expired,
    /// Unknown, used, or its account is gone.
    Invalid,
}

/// A named page allow-list (feature keys, in the catalogue's order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct PermissionGroupRecord {
    pub name: String,
    pub features: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl UserRecord {
    fn is_enabled_admin(&self) -> bool {
        self.role == ADMIN_ROLE && !self.disabled
    }
}

/// A change to one account; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    pub role: Option<String>,
    pub disabled: Option<bool>,
    pub password_hash: Option<String>,
    pub must_change_pw: Option<bool>,
    /// `Some(None)` clears.
    pub email: Option<Option<String>>,
    /// `Some(None)` clears (all pages).
    pub allowed_features: Option<Option<Vec<String>>>,
    /// `Some(None)` clears; a name must be an existing group.
    pub permission_group: Option<Option<String>>,
}

/// What became of an insert, an update or a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserChange {
    Applied,
    NotFound,
    /// Refused: it would leave no enabled admin.
    LastAdmin,
    /// Refused: the name is taken.
    Taken,
    /// Refused: the permission group named does not exist.
    NoSuchGroup,
    /// Refused: the group still has members.
    HasMembers,
}

pub(super) fn ensure_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(USERS).map_err(Error::redb_op)?;
    txn.open_table(GROUPS).map_err(Error::redb_op)?;
    txn.open_table(SETUP).map_err(Error::redb_op)?;
    Ok(())
}

/// Removes every link of `username` (and, by the way, every expired one).
fn drop_links(txn: &WriteTransaction, username: &str, now: DateTime<Utc>) -> Result<()> {
    let mut t = txn.open_table(SETUP).map_err(Error::redb_op)?;
    let mut gone = Vec::new();
    for e in t.iter().map_err(Error::redb_op)? {
        let (k, v) = e.map_err(Error::redb_op)?;
        let r: PasswordSetupRecord = decode(SETUP_NAME, v.value())?;
        if r.username == username || r.expires_at <= now {
            gone.push(k.value().to_string());
        }
    }
    for k in gone {
        t.remove(k.as_str()).map_err(Error::redb_op)?;
    }
    Ok(())
}

fn group_exists(t: &impl ReadableTable<&'static str, &'static [u8]>, name: &str) -> Result<bool> {
    Ok(t.get(name).map_err(Error::redb_op)?.is_some())
}

pub(super) fn get(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    username: &str,
) -> Result<Option<UserRecord>> {
    t.get(username)
        .map_err(Error::redb_op)?
        .map(|v| decode(NAME, v.value()))
        .transpose()
}

fn enabled_admins(t: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<usize> {
    let mut n = 0;
    for e in t.iter().map_err(Error::redb_op)? {
        let (_, v) = e.map_err(Error::redb_op)?;
        let u: UserRecord = decode(NAME, v.value())?;
        n += usize::from(u.is_enabled_admin());
    }
    Ok(n)
}

impl RelationalStore {
    /// One account.
    pub fn user(&self, username: &str) -> Result<Option<UserRecord>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let t = txn.open_table(USERS).map_err(Error::redb_op)?;
        get(&t, username)
    }

    /// Whether `username` is the one enabled admin (the account whose
    /// lockout would leave the backend without an admin).
    pub fn is_last_enabled_admin(&self, username: &str) -> Result<bool> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let t = txn.open_table(USERS).map_err(Error::redb_op)?;
        let is_admin = get(&t, username)?.is_some_and(|u| u.is_enabled_admin());
        Ok(is_admin && enabled_admins(&t)? == 1)
    }

    /// Every account, by username.
    pub fn users(&self) -> Result<Vec<UserRecord>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let t = txn.open_table(USERS).map_err(Error::redb_op)?;
        let mut out = Vec::new();
        for e in t.iter().map_err(Error::redb_op)? {
            let (_, v) = e.map_err(Error::redb_op)?;
            out.push(decode(NAME, v.value())?);
        }
        Ok(out)
    }

    /// Adds an account; `false` (and nothing written) when the username
    /// is taken.
    pub fn insert_user(&self, user: &UserRecord) -> Result<UserChange> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let outcome = {
            let mut t = txn.open_table(USERS).map_err(Error::redb_op)?;
            let groups = txn.open_table(GROUPS).map_err(Error::redb_op)?;
            if t.get(user.username.as_str())
                .map_err(Error::redb_op)?
                .is_some()
            {
                UserChange::Taken
            } else if let Some(g) = user
                .permission_group
                .as_deref()
                .filter(|g| !group_exists(&groups, g).unwrap_or(false))
            {
                let _ = g;
                UserChange::NoSuchGroup
            } else {
                t.insert(user.username.as_str(), encode(NAME, user)?.as_slice())
                    .map_err(Error::redb_op)?;
                UserChange::Applied
            }
        };
        txn.commit().map_err(Error::redb_op)?;
        Ok(outcome)
    }

    /// Adds `user` only when there is no account at all (the bootstrap
    /// admin); `true` when it was added.
    pub fn insert_first_user(&self, user: &UserRecord) -> Result<bool> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let inserted = {
            let mut t = txn.open_table(USERS).map_err(Error::redb_op)?;
            if t.is_empty().map_err(Error::redb_op)? {
                t.insert(user.username.as_str(), encode(NAME, user)?.as_slice())
                    .map_err(Error::redb_op)?;
                true
            } else {
                false
            }
        };
        txn.commit().map_err(Error::redb_op)?;
        Ok(inserted)
    }

    /// Applies every field of `update` or none: refused when the account
    /// is the last enabled admin and would stop being one.
    pub fn update_user(
        &self,
        username: &str,
        update: &UserUpdate,
        now: DateTime<Utc>,
    ) -> Result<UserChange> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let outcome = {
            let mut t = txn.open_table(USERS).map_err(Error::redb_op)?;
            let current = get(&t, username)?;
            match current {
                None => UserChange::NotFound,
                Some(mut user) => {
                    let was_admin = user.is_enabled_admin();
                    if let Some(role) = &update.role {
                        user.role.clone_from(role);
                    }
                    if let Some(disabled) = update.disabled {
                        user.disabled = disabled;
                    }
                    if let Some(hash) = &update.password_hash {
                        user.password_hash.clone_from(hash);
                        user.token_epoch = user.token_epoch.wrapping_add(1);
                        user.passkey_epoch = user.passkey_epoch.wrapping_add(1);
                    }
                    if let Some(flag) = update.must_change_pw {
                        user.must_change_pw = flag;
                    }
                    if let Some(email) = &update.email {
                        if user.email != *email {
                            // A link sent to the old address stops working.
                            drop_links(&txn, username, now)?;
                        }
                        user.email.clone_from(email);
                    }
                    if let Some(features) = &update.allowed_features {
                        user.allowed_features.clone_from(features);
                    }
                    if let Some(group) = &update.permission_group {
                        user.permission_group.clone_from(group);
                    }
                    let groups = txn.open_table(GROUPS).map_err(Error::redb_op)?;
                    let dangling = match update.permission_group.as_ref().and_then(Option::as_deref)
                    {
                        Some(g) => !group_exists(&groups, g)?,
                        None => false,
                    };
                    if dangling {
                        UserChange::NoSuchGroup
                    } else if was_admin && !user.is_enabled_admin() && enabled_admins(&t)? <= 1 {
                        UserChange::LastAdmin
                    } else {
                        user.updated_at = now;
                        t.insert(username, encode(NAME, &user)?.as_slice())
                            .map_err(Error::redb_op)?;
                        UserChange::Applied
                    }
                }
            }
        };
        if outcome == UserChange::Applied {
            txn.commit().map_err(Error::redb_op)?;
        } else {
            txn.abort().map_err(Error::redb_op)?;
        }
        Ok(outcome)
    }

    /// Sets (or with `None` removes) the account's TOTP secret, the step
    /// of the code that confirmed it counted as used; `false` when there
    /// is no such account.
    pub fn set_totp_secret(
        &self,
        username: &str,
        secret: Option<&str>,
        used_step: u64,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.change_user(username, |user| {
            user.totp_secret = secret.map(str::to_string);
            user.totp_last_step = used_step;
            user.passkey_epoch = user.passkey_epoch.wrapping_add(1);
            user.updated_at = now;
            true
        })
    }

    /// Takes TOTP step `step` for the account: `true` (and recorded) when
    /// it is later than every step used before, `false` for a replay or
    /// an unknown account. One write transaction, so two requests with the
    /// same code cannot both pass.
    pub fn use_totp_step(&self, username: &str, step: u64) -> Result<bool> {
        self.change_user(username, |user| {
            if step > user.totp_last_step {
                user.totp_last_step = step;
                true
            } else {
                false
            }
        })
    }

    /// Applies `change` to one account in one write transaction, kept
    /// when it answers `true`; `false` too when there is no such account.
    fn change_user(
        &self,
        username: &str,
        change: impl FnOnce(&mut UserRecord) -> bool,
    ) -> Result<bool> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let applied = {
            let mut t = txn.open_table(USERS).map_err(Error::redb_op)?;
            match get(&t, username)? {
                Some(mut user) => {
                    let keep = change(&mut user);
                    if keep {
                        t.insert(username, encode(NAME, &user)?.as_slice())
                            .map_err(Error::redb_op)?;
                    }
                    keep
                }
                None => false,
            }
        };
        if applied {
            txn.commit().map_err(Error::redb_op)?;
        } else {
            txn.abort().map_err(Error::redb_op)?;
        }
        Ok(applied)
    }

    /// Stores a link for its account, ending the account's earlier ones;
    /// `false` (nothing stored) when there is no such account.
    pub fn issue_password_setup(&self, link: &PasswordSetupRecord) -> Result<bool> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let exists = {
            let users = txn.open_table(USERS).map_err(Error::redb_op)?;
            get(&users, &link.username)?.is_some()
        };
        if exists {
            drop_links(&txn, &link.username, link.created_at)?;
            let mut t = txn.open_table(SETUP).map_err(Error::redb_op)?;
            t.insert(
                link.token_hash.as_str(),
                encode(SETUP_NAME, link)?.as_slice(),
            )
            .map_err(Error::redb_op)?;
        }
        txn.commit().map_err(Error::redb_op)?;
        Ok(exists)
    }

    /// What the link of `token_hash` is at `now`.
    pub fn password_setup(&self, token_hash: &str, now: DateTime<Utc>) -> Result<SetupLookup> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let t = txn.open_table(SETUP).map_err(Error::redb_op)?;
        let users = txn.open_table(USERS).map_err(Error::redb_op)?;
        let Some(v) = t.get(token_hash).map_err(Error::redb_op)? else {
            return Ok(SetupLookup::Invalid);
        };
        let link: PasswordSetupRecord = decode(SETUP_NAME, v.value())?;
        Ok(if get(&users, &link.username)?.is_none() {
            SetupLookup::Invalid
        } else if link.expires_at <= now {
            SetupLookup::Expired
        } else {
            SetupLookup::Valid(link)
        })
    }

    /// Uses the link of `token_hash`: in one transaction the account gets
    /// `password_hash` (no change required at next login, earlier tokens
    /// ended) and the link is gone. `Valid` when applied.
    pub fn use_password_setup(
        &self,
        token_hash: &str,
        password_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<SetupLookup> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let outcome = {
            let mut t = txn.open_table(SETUP).map_err(Error::redb_op)?;
            let mut users = txn.open_table(USERS).map_err(Error::redb_op)?;
            let link = match t.get(token_hash).map_err(Error::redb_op)? {
                Some(v) => Some(decode::<PasswordSetupRecord>(SETUP_NAME, v.value())?),
                None => None,
            };
            match link {
                None => SetupLookup::Invalid,
                Some(link) if link.expires_at <= now => SetupLookup::Expired,
                Some(link) => match get(&users, &link.username)? {
                    None => SetupLookup::Invalid,
                    Some(mut user) => {
                        user.password_hash = password_hash.to_string();
                        user.must_change_pw = false;
                        user.token_epoch = user.token_epoch.wrapping_add(1);
                        user.passkey_epoch = user.passkey_epoch.wrapping_add(1);
                        user.updated_at = now;
                        users
                            .insert(link.username.as_str(), encode(NAME, &user)?.as_slice())
                            .map_err(Error::redb_op)?;
                        t.remove(token_hash).map_err(Error::redb_op)?;
                        SetupLookup::Valid(link)
                    }
                },
            }
        };
        if matches!(outcome, SetupLookup::Valid(_)) {
            txn.commit().map_err(Error::redb_op)?;
        } else {
            txn.abort().map_err(Error::redb_op)?;
        }
        Ok(outcome)
    }

    /// Every permission group by name, with its member count.
    pub fn permission_groups(&self) -> Result<Vec<(PermissionGroupRecord, usize)>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let groups = txn.open_table(GROUPS).map_err(Error::redb_op)?;
        let users = txn.open_table(USERS).map_err(Error::redb_op)?;
        let mut members = std::collections::HashMap::<String, usize>::new();
        for e in users.iter().map_err(Error::redb_op)? {
            let (_, v) = e.map_err(Error::redb_op)?;
            let u: UserRecord = decode(NAME, v.value())?;
            if let Some(g) = u.permission_group {
                *members.entry(g).or_default() += 1;
            }
        }
        let mut out = Vec::new();
        for e in groups.iter().map_err(Error::redb_op)? {
            let (_, v) = e.map_err(Error::redb_op)?;
            let g: PermissionGroupRecord = decode(GROUPS_NAME, v.value())?;
            let n = members.get(&g.name).copied().unwrap_or(0);
            out.push((g, n));
        }
        Ok(out)
    }

    /// One permission group.
    pub fn permission_group(&self, name: &str) -> Result<Option<PermissionGroupRecord>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let t = txn.open_table(GROUPS).map_err(Error::redb_op)?;
        match t.get(name).map_err(Error::redb_op)? {
            Some(v) => Ok(Some(decode(GROUPS_NAME, v.value())?)),
            None => Ok(None),
        }
    }

    /// Adds a permission group; `Taken` when the name is.
    pub fn insert_permission_group(&self, group: &PermissionGroupRecord) -> Result<UserChange> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let outcome = {
            let mut t = txn.open_table(GROUPS).map_err(Error::redb_op)?;
            if group_exists(&t, &group.name)? {
                UserChange::Taken
            } else {
                t.insert(group.name.as_str(), encode(GROUPS_NAME, group)?.as_slice())
                    .map_err(Error::redb_op)?;
                UserChange::Applied
            }
        };
        txn.commit().map_err(Error::redb_op)?;
        Ok(outcome)
    }

    /// Replaces a group's features.
    pub fn update_permission_group(
        &self,
        name: &str,
        features: &[String],
        now: DateTime<Utc>,
    ) -> Result<UserChange> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let outcome = {
            let mut t = txn.open_table(GROUPS).map_err(Error::redb_op)?;
            let current = match t.get(name).map_err(Error::redb_op)? {
                Some(v) => Some(decode::<PermissionGroupRecord>(GROUPS_NAME, v.value())?),
                None => None,
            };
            match current {
                None => UserChange::NotFound,
                Some(mut g) => {
                    g.features = features.to_vec();
                    g.updated_at = now;
                    t.insert(name, encode(GROUPS_NAME, &g)?.as_slice())
                        .map_err(Error::redb_op)?;
                    UserChange::Applied
                }
            }
        };
        txn.commit().map_err(Error::redb_op)?;
        Ok(outcome)
    }

    /// Removes a group that no account belongs to (`HasMembers` else).
    pub fn delete_permission_group(&self, name: &str) -> Result<UserChange> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let outcome = {
            let mut t = txn.open_table(GROUPS).map_err(Error::redb_op)?;
            let users = txn.open_table(USERS).map_err(Error::redb_op)?;
            if !group_exists(&t, name)? {
                UserChange::NotFound
            } else {
                let mut member = false;
                for e in users.iter().map_err(Error::redb_op)? {
                    let (_, v) = e.map_err(Error::redb_op)?;
                    let u: UserRecord = decode(NAME, v.value())?;
                    member |= u.permission_group.as_deref() == Some(name);
                }
                if member {
                    UserChange::HasMembers
                } else {
                    t.remove(name).map_err(Error::redb_op)?;
                    UserChange::Applied
                }
            }
        };
        txn.commit().map_err(Error::redb_op)?;
        Ok(outcome)
    }

    /// Adds imported groups (first writer wins); how many were added.
    pub fn import_permission_groups(&self, groups: &[PermissionGroupRecord]) -> Result<usize> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let mut added = 0;
        {
            let mut t = txn.open_table(GROUPS).map_err(Error::redb_op)?;
            for g in groups {
                if !group_exists(&t, &g.name)? {
                    t.insert(g.name.as_str(), encode(GROUPS_NAME, g)?.as_slice())
                        .map_err(Error::redb_op)?;
                    added += 1;
                }
            }
        }
        txn.commit().map_err(Error::redb_op)?;
        Ok(added)
    }

    /// Removes an account unless it is the last enabled admin.
    pub fn delete_user(&self, username: &str) -> Result<UserChange> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let outcome = {
            let mut t = txn.open_table(USERS).map_err(Error::redb_op)?;
            let current = get(&t, username)?;
            match current {
                None => UserChange::NotFound,
                Some(u) if u.is_enabled_admin() && enabled_admins(&t)? <= 1 => {
                    UserChange::LastAdmin
                }
                Some(_) => {
                    t.remove(username).map_err(Error::redb_op)?;
                    drop_links(&txn, username, Utc::now())?;
                    // A name made again later inherits no sign-in.
                    super::passkeys::drop_all(&txn, username)?;
                    UserChange::Applied
                }
            }
        };
        if outcome == UserChange::Applied {
            txn.commit().map_err(Error::redb_op)?;
        } else {
            txn.abort().map_err(Error::redb_op)?;
        }
        Ok(outcome)
    }
}

impl RelationalStore {
    /// Adds accounts whose username is not taken; returns how many.
    pub fn import_users(&self, records: &[UserRecord]) -> Result<usize> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let mut added = 0;
        {
            let mut t = txn.open_table(USERS).map_err(Error::redb_op)?;
            for u in records {
                if t.get(u.username.as_str())
                    .map_err(Error::redb_op)?
                    .is_none()
                {
                    t.insert(u.username.as_str(), encode(NAME, u)?.as_slice())
                        .map_err(Error::redb_op)?;
                    added += 1;
                }
            }
        }
        txn.commit().map_err(Error::redb_op)?;
        Ok(added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, role: &str) -> UserRecord {
        UserRecord {
            username: name.into(),
            password_hash: "$argon2id$x".into(),
            role: role.into(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            ..Default::default()
        }
    }

    #[test]
    fn the_last_enabled_admin_cannot_be_removed_demoted_or_disabled() {
        let dir = tempfile::tempdir().unwrap();
        let store = RelationalStore::open(dir.path()).unwrap();
        assert!(store.insert_first_user(&user("root", "admin")).unwrap());
        assert!(
            !store.insert_first_user(&user("other", "admin")).unwrap(),
            "bootstrap only seeds an empty table"
        );
        assert_eq!(
            store.insert_user(&user("ann", "viewer")).unwrap(),
            UserChange::Applied
        );
        assert_eq!(
            store.insert_user(&user("ann", "admin")).unwrap(),
            UserChange::Taken
        );
        assert_eq!(store.user("ann").unwrap().unwrap().role, "viewer");

        let now = Utc::now();
        let demote = UserUpdate {
            role: Some("operator".into()),
            ..Default::default()
        };
        let disable = UserUpdate {
            disabled: Some(true),
            ..Default::default()
        };
        assert_eq!(
            store.update_user("root", &demote, now).unwrap(),
            UserChange::LastAdmin
        );
        assert_eq!(
            store.update_user("root", &disable, now).unwrap(),
            UserChange::LastAdmin
        );
        assert_eq!(store.delete_user("root").unwrap(), UserChange::LastAdmin);
        assert_eq!(store.user("root").unwrap().unwrap().role, "admin");

        // A second admin makes the first one removable.
        let promote = UserUpdate {
            role: Some("admin".into()),
            password_hash: Some("$argon2id$new".into()),
            must_change_pw: Some(true),
            ..Default::default()
        };
        assert_eq!(
            store.update_user("ann", &promote, now).unwrap(),
            UserChange::Applied
        );
        let ann = store.user("ann").unwrap().unwrap();
        assert_eq!(
            (
                ann.role.as_str(),
                ann.password_hash.as_str(),
                ann.must_change_pw
            ),
            ("admin", "$argon2id$new", true)
        );
        assert_eq!(store.delete_user("root").unwrap(), UserChange::Applied);
        assert_eq!(store.delete_user("root").unwrap(), UserChange::NotFound);
        assert_eq!(
            store.update_user("nobody", &disable, now).unwrap(),
            UserChange::NotFound
        );
        assert_eq!(
            store
                .users()
                .unwrap()
                .iter()
                .map(|u| u.username.as_str())
                .collect::<Vec<_>>(),
            ["ann"]
        );
    }

    #[test]
    fn a_refused_update_changes_no_field() {
        let dir = tempfile::tempdir().unwrap();
        let store = RelationalStore::open(dir.path()).unwrap();
        store.insert_user(&user("root", "admin")).unwrap();
        let mixed = UserUpdate {
            role: Some("viewer".into()),
            password_hash: Some("changed".into()),
            ..Default::default()
        };
        assert_eq!(
            store.update_user("root", &mixed, Utc::now()).unwrap(),
            UserChange::LastAdmin
        );
        assert_eq!(
            store.user("root").unwrap().unwrap().password_hash,
            "$argon2id$x"
        );
    }

    #[test]
    fn a_totp_step_is_taken_once_and_only_forward() {
        let dir = tempfile::tempdir().unwrap();
        let store = RelationalStore::open(dir.path()).unwrap();
        store.insert_user(&user("ann", "viewer")).unwrap();
        assert!(!store.use_totp_step("nobody", 5).unwrap());
        assert!(store
            .set_totp_secret("ann", Some("JBSWY3DPEHPK3PXP"), 10, Utc::now())
            .unwrap());
        assert!(
            !store.use_totp_step("ann", 10).unwrap(),
            "the confirming code"
        );
        assert!(store.use_totp_step("ann", 11).unwrap());
        assert!(!store.use_totp_step("ann", 11).unwrap(), "a replay");
        assert!(!store.use_totp_step("ann", 9).unwrap(), "an older code");
        let ann = store.user("ann").unwrap().unwrap();
        assert_eq!(
            (ann.totp_secret.as_deref(), ann.totp_last_step),
            (Some("JBSWY3DPEHPK3PXP"), 11)
        );
        assert!(store.set_totp_secret("ann", None, 0, Utc::now()).unwrap());
        assert_eq!(store.user("ann").unwrap().unwrap().totp_secret, None);
    }

    #[test]
    fn groups_are_assigned_only_when_they_exist_and_deleted_only_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = RelationalStore::open(dir.path()).unwrap();
        let mut ann = user("ann", "viewer");
        ann.permission_group = Some("helpdesk".into());
        assert_eq!(store.insert_user(&ann).unwrap(), UserChange::NoSuchGroup);
        let group = PermissionGroupRecord {
            name: "helpdesk".into(),
            features: vec!["agents".into()],
            ..Default::default()
        };
        assert_eq!(
            store.insert_permission_group(&group).unwrap(),
            UserChange::Applied
        );
        assert_eq!(
            store.insert_permission_group(&group).unwrap(),
            UserChange::Taken
        );
        assert_eq!(store.insert_user(&ann).unwrap(), UserChange::Applied);
        assert_eq!(
            store.delete_permission_group("helpdesk").unwrap(),
            UserChange::HasMembers
        );
        let listed = store.permission_groups().unwrap();
        assert_eq!((listed[0].0.name.as_str(), listed[0].1), ("helpdesk", 1));
        let to_missing = UserUpdate {
            permission_group: Some(Some("nope".into())),
            ..Default::default()
        };
        assert_eq!(
            store.update_user("ann", &to_missing, Utc::now()).unwrap(),
            UserChange::NoSuchGroup
        );
        let clear = UserUpdate {
            permission_group: Some(None),
            ..Default::default()
        };
        assert_eq!(
            store.update_user("ann", &clear, Utc::now()).unwrap(),
            UserChange::Applied
        );
        assert_eq!(
            store.delete_permission_group("helpdesk").unwrap(),
            UserChange::Applied
        );
        assert_eq!(
            store.delete_permission_group("helpdesk").unwrap(),
            UserChange::NotFound
        );
    }

    #[test]
    fn a_link_works_once_until_it_expires_and_a_newer_one_or_an_address_change_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = RelationalStore::open(dir.path()).unwrap();
        let now = Utc::now();
        let link = |hash: &str, hours: i64| PasswordSetupRecord {
            token_hash: hash.into(),
            username: "ann".into(),
            purpose: "reset".into(),
            created_at: now,
            expires_at: now + chrono::Duration::hours(hours),
        };
        assert!(
            !store.issue_password_setup(&link("h0", 72)).unwrap(),
            "no account yet"
        );
        let mut ann = user("ann", "viewer");
        ann.must_change_pw = true;
        store.insert_user(&ann).unwrap();
        assert!(store.issue_password_setup(&link("h1", 72)).unwrap());
        assert!(store.issue_password_setup(&link("h2", 72)).unwrap());
        assert_eq!(
            store.password_setup("h1", now).unwrap(),
            SetupLookup::Invalid,
            "replaced"
        );
        assert!(matches!(
            store.password_setup("h2", now).unwrap(),
            SetupLookup::Valid(_)
        ));
        let later = now + chrono::Duration::hours(73);
        assert_eq!(
            store.password_setup("h2", later).unwrap(),
            SetupLookup::Expired
        );
        assert_eq!(
            store.use_password_setup("h2", "$new", later).unwrap(),
            SetupLookup::Expired
        );
        assert!(matches!(
            store.use_password_setup("h2", "$new", now).unwrap(),
            SetupLookup::Valid(_)
        ));
        let ann = store.user("ann").unwrap().unwrap();
        assert_eq!(
            (
                ann.password_hash.as_str(),
                ann.must_change_pw,
                ann.token_epoch
            ),
            ("$new", false, 1)
        );
        assert_eq!(
            store.use_password_setup("h2", "$again", now).unwrap(),
            SetupLookup::Invalid,
            "used once"
        );
        store.issue_password_setup(&link("h3", 72)).unwrap();
        let readdress = UserUpdate {
            email: Some(Some("ann@new.example".into())),
            ..Default::default()
        };
        store.update_user("ann", &readdress, now).unwrap();
        assert_eq!(
            store.password_setup("h3", now).unwrap(),
            SetupLookup::Invalid
        );
    }
}
