//! `user_passkeys`: the WebAuthn credentials accounts sign in with,
//! keyed by credential id (base64url, as the browser reports it), so a
//! sign-in finds its credential in one lookup and one authenticator can
//! never be registered twice. The credential itself (public key, counter,
//! backup flags) is the WebAuthn library's own JSON, kept opaque here.
//! The store owns the rules that must hold across concurrent requests: a
//! registration lands only while the account is as it was when the
//! registration was started (same `passkey_epoch`, enabled, no password
//! change pending) and under the per-account limit; counter updates are
//! compare-and-set.

use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::users::{get as get_user, NAME as USERS_NAME, USERS};
use super::RelationalStore;
use crate::{Error, Result};

const PASSKEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("user_passkeys");
const NAME: &str = "user_passkeys";
/// The last id given, so an id is never reused after a removal.
const LAST_ID: TableDefinition<&str, i64> = TableDefinition::new("user_passkeys_last_id");

/// One registered passkey.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct PasskeyRecord {
    /// Stable number the API names it by (`/api/auth/passkeys/{id}`).
    pub id: i64,
    pub username: String,
    /// The account's WebAuthn user handle when it was registered.
    pub user_uuid: String,
    /// The credential id, base64url without padding.
    pub credential_id: String,
    /// The credential as the WebAuthn library serialises it.
    pub passkey: String,
    /// What its owner called it.
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// What became of a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasskeyAdd {
    /// Stored under this id.
    Added(i64),
    /// No such account, or it was disabled, must change its password, or
    /// changed what the registration re-authenticated with.
    Stale,
    /// The account already has the maximum.
    Limit,
    /// This credential is registered already (to anyone).
    Duplicate,
}

fn exhausted() -> Error {
    Error::Shape {
        table: NAME,
        message: "passkey ids exhausted".into(),
    }
}

pub(super) fn ensure_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(PASSKEYS).map_err(Error::redb_op)?;
    txn.open_table(LAST_ID).map_err(Error::redb_op)?;
    Ok(())
}

/// The next id, taken (at least `floor + 1`, so imported ids are never
/// given again).
fn next_id(txn: &WriteTransaction, floor: i64) -> Result<i64> {
    let mut t = txn.open_table(LAST_ID).map_err(Error::redb_op)?;
    let last = t
        .get("last")
        .map_err(Error::redb_op)?
        .map(|v| v.value())
        .unwrap_or(0)
        .max(floor);
    let id = last.checked_add(1).ok_or_else(exhausted)?;
    t.insert("last", id).map_err(Error::redb_op)?;
    Ok(id)
}

fn all(t: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<Vec<PasskeyRecord>> {
    let mut out = Vec::new();
    for e in t.iter().map_err(Error::redb_op)? {
        let (_, v) = e.map_err(Error::redb_op)?;
        out.push(decode::<PasskeyRecord>(NAME, v.value())?);
    }
    Ok(out)
}

/// Removes every passkey of `username`; how many.
pub(super) fn drop_all(txn: &WriteTransaction, username: &str) -> Result<usize> {
    let mut t = txn.open_table(PASSKEYS).map_err(Error::redb_op)?;
    let gone: Vec<String> = all(&t)?
        .into_iter()
        .filter(|p| p.username == username)
        .map(|p| p.credential_id)
        .collect();
    for k in &gone {
        t.remove(k.as_str()).map_err(Error::redb_op)?;
    }
    Ok(gone.len())
}

impl RelationalStore {
    /// The passkeys of one account, oldest first.
    pub fn passkeys(&self, username: &str) -> Result<Vec<PasskeyRecord>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let t = txn.open_table(PASSKEYS).map_err(Error::redb_op)?;
        let mut out: Vec<_> = all(&t)?
            .into_iter()
            .filter(|p| p.username == username)
            .collect();
        out.sort_by_key(|p| p.id);
        Ok(out)
    }

    /// The passkey with this credential id.
    pub fn passkey(&self, credential_id: &str) -> Result<Option<PasskeyRecord>> {
        let txn = self.db.begin_read().map_err(Error::redb_op)?;
        let t = txn.open_table(PASSKEYS).map_err(Error::redb_op)?;
        t.get(credential_id)
            .map_err(Error::redb_op)?
            .map(|v| decode(NAME, v.value()))
            .transpose()
    }

    /// The account, with its passkey user handle made (`candidate`) if it
    /// had none; `None` when there is no such account.
    pub fn ensure_passkey_handle(
        &self,
        username: &str,
        candidate: &str,
    ) -> Result<Option<super::UserRecord>> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let user = {
            let mut t = txn.open_table(USERS).map_err(Error::redb_op)?;
            match get_user(&t, username)? {
                Some(mut u) if u.passkey_handle.is_none() => {
                    u.passkey_handle = Some(candidate.to_string());
                    t.insert(username, encode(USERS_NAME, &u)?.as_slice())
                        .map_err(Error::redb_op)?;
                    Some(u)
                }
                other => other,
            }
        };
        txn.commit().map_err(Error::redb_op)?;
        Ok(user)
    }

    /// Stores a new passkey (its `id` is assigned here) if, in this one
    /// transaction, its account is still at `epoch`, enabled, not held to
    /// a password change, below `max` passkeys, and the credential is new.
    pub fn add_passkey(
        &self,
        record: &PasskeyRecord,
        epoch: u64,
        max: usize,
    ) -> Result<PasskeyAdd> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let outcome = {
            let users = txn.open_table(USERS).map_err(Error::redb_op)?;
            let mut t = txn.open_table(PASSKEYS).map_err(Error::redb_op)?;
            let fresh = get_user(&users, &record.username)?.is_some_and(|u| {
                u.passkey_epoch == epoch
                    && !u.disabled
                    && !u.must_change_pw
                    && u.passkey_handle.as_deref() == Some(record.user_uuid.as_str())
            });
            let existing = all(&t)?;
            if !fresh {
                PasskeyAdd::Stale
            } else if existing
                .iter()
                .any(|p| p.credential_id == record.credential_id)
            {
                PasskeyAdd::Duplicate
            } else if existing
                .iter()
                .filter(|p| p.username == record.username)
                .count()
                >= max
            {
                PasskeyAdd::Limit
            } else {
                let floor = existing.iter().map(|p| p.id).max().unwrap_or(0);
                let id = next_id(&txn, floor)?;
                let stored = PasskeyRecord {
                    id,
                    ..record.clone()
                };
                t.insert(
                    stored.credential_id.as_str(),
                    encode(NAME, &stored)?.as_slice(),
                )
                .map_err(Error::redb_op)?;
                PasskeyAdd::Added(id)
            }
        };
        if matches!(outcome, PasskeyAdd::Added(_)) {
            txn.commit().map_err(Error::redb_op)?;
        } else {
            txn.abort().map_err(Error::redb_op)?;
        }
        Ok(outcome)
    }

    /// After a sign-in: the passkey's last use, and its credential
    /// replaced by `updated` only if it is still `expected` (a concurrent
    /// sign-in that moved the counter first wins). `false` when the
    /// passkey is gone.
    pub fn passkey_used(
        &self,
        credential_id: &str,
        expected: &str,
        updated: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let found = {
            let mut t = txn.open_table(PASSKEYS).map_err(Error::redb_op)?;
            let current = t
                .get(credential_id)
                .map_err(Error::redb_op)?
                .map(|v| decode::<PasskeyRecord>(NAME, v.value()))
                .transpose()?;
            match current {
                None => false,
                Some(mut p) => {
                    if let Some(new) = updated.filter(|_| p.passkey == expected) {
                        p.passkey = new.to_string();
                    }
                    p.last_used_at = Some(now);
                    t.insert(credential_id, encode(NAME, &p)?.as_slice())
                        .map_err(Error::redb_op)?;
                    true
                }
            }
        };
        txn.commit().map_err(Error::redb_op)?;
        Ok(found)
    }

    /// Removes one passkey of `username`; `false` when it has none by
    /// that id.
    pub fn remove_passkey(&self, username: &str, id: i64) -> Result<bool> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let removed = {
            let mut t = txn.open_table(PASSKEYS).map_err(Error::redb_op)?;
            let key = all(&t)?
                .into_iter()
                .find(|p| p.id == id && p.username == username)
                .map(|p| p.credential_id);
            match key {
                Some(k) => {
                    t.remove(k.as_str()).map_err(Error::redb_op)?;
                    true
                }
                None => false,
            }
        };
        txn.commit().map_err(Error::redb_op)?;
        Ok(removed)
    }

    /// Removes every passkey of `username` and ends registrations in
    /// flight; `None` when there is no such account, else how many.
    pub fn remove_passkeys(&self, username: &str, now: DateTime<Utc>) -> Result<Option<usize>> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let outcome = {
            let mut users = txn.open_table(USERS).map_err(Error::redb_op)?;
            match get_user(&users, username)? {
                None => None,
                Some(mut u) => {
                    u.passkey_epoch = u.passkey_epoch.wrapping_add(1);
                    u.updated_at = now;
                    users
                        .insert(username, encode(USERS_NAME, &u)?.as_slice())
                        .map_err(Error::redb_op)?;
                    Some(drop_all(&txn, username)?)
                }
            }
        };
        txn.commit().map_err(Error::redb_op)?;
        Ok(outcome)
    }

    /// Adds imported passkeys whose credential is not stored yet and whose
    /// account exists (its user handle set from them when it has none);
    /// how many.
    pub fn import_passkeys(&self, records: &[PasskeyRecord]) -> Result<usize> {
        let txn = self.db.begin_write().map_err(Error::redb_op)?;
        let mut added = 0;
        {
            let mut users = txn.open_table(USERS).map_err(Error::redb_op)?;
            let mut t = txn.open_table(PASSKEYS).map_err(Error::redb_op)?;
            for r in records {
                let Some(mut user) = get_user(&users, &r.username)? else {
                    continue;
                };
                if t.get(r.credential_id.as_str())
                    .map_err(Error::redb_op)?
                    .is_some()
                {
                    continue;
                }
                if user.passkey_handle.is_none() {
                    user.passkey_handle = Some(r.user_uuid.clone());
                    users
                        .insert(r.username.as_str(), encode(USERS_NAME, &user)?.as_slice())
                        .map_err(Error::redb_op)?;
                }
                let floor = all(&t)?.iter().map(|p| p.id).max().unwrap_or(0);
                let stored = PasskeyRecord {
                    id: next_id(&txn, floor)?,
                    ..r.clone()
                };
                t.insert(r.credential_id.as_str(), encode(NAME, &stored)?.as_slice())
                    .map_err(Error::redb_op)?;
                added += 1;
            }
        }
        txn.commit().map_err(Error::redb_op)?;
        Ok(added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{UserRecord, UserUpdate};

    fn account(store: &RelationalStore, name: &str) -> UserRecord {
        store
            .insert_user(&UserRecord {
                username: name.into(),
                password_hash: "$argon2id$x".into(),
                role: "admin".into(),
                created_at: Utc::now(),
                updated_at: Utc::now(),
                ..Default::default()
            })
            .unwrap();
        store
            .ensure_passkey_handle(name, "handle-1")
            .unwrap()
            .unwrap()
    }

    fn key(user: &UserRecord, cred: &str) -> PasskeyRecord {
        PasskeyRecord {
            username: user.username.clone(),
            user_uuid: user.passkey_handle.clone().unwrap(),
            credential_id: cred.into(),
            passkey: "{\"counter\":0}".into(),
            name: cred.into(),
            created_at: Utc::now(),
            ..Default::default()
        }
    }

    #[test]
    fn a_registration_lands_once_under_the_limit_and_only_while_the_account_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let store = RelationalStore::open(dir.path()).unwrap();
        let ann = account(&store, "ann");
        assert_eq!(
            store
                .ensure_passkey_handle("ann", "handle-2")
                .unwrap()
                .unwrap()
                .passkey_handle
                .as_deref(),
            Some("handle-1"),
            "a handle is made once"
        );
        let epoch = ann.passkey_epoch;
        assert_eq!(
            store.add_passkey(&key(&ann, "c1"), epoch, 2).unwrap(),
            PasskeyAdd::Added(1)
        );
        assert_eq!(
            store.add_passkey(&key(&ann, "c1"), epoch, 2).unwrap(),
            PasskeyAdd::Duplicate
        );
        assert_eq!(
            store.add_passkey(&key(&ann, "c2"), epoch, 2).unwrap(),
            PasskeyAdd::Added(2)
        );
        assert_eq!(
            store.add_passkey(&key(&ann, "c3"), epoch, 2).unwrap(),
            PasskeyAdd::Limit
        );
        assert!(store.remove_passkey("ann", 2).unwrap());
        assert!(!store.remove_passkey("ann", 2).unwrap(), "gone already");
        let new_password = UserUpdate {
            password_hash: Some("$argon2id$y".into()),
            ..Default::default()
        };
        store.update_user("ann", &new_password, Utc::now()).unwrap();
        assert_eq!(
            store.add_passkey(&key(&ann, "c3"), epoch, 2).unwrap(),
            PasskeyAdd::Stale,
            "started before the password change"
        );
        let now = store.user("ann").unwrap().unwrap().passkey_epoch;
        store
            .set_totp_secret("ann", Some("JBSWY3DPEHPK3PXP"), 1, Utc::now())
            .unwrap();
        assert_eq!(
            store.add_passkey(&key(&ann, "c3"), now, 2).unwrap(),
            PasskeyAdd::Stale
        );
        let now = store.user("ann").unwrap().unwrap().passkey_epoch;
        assert_eq!(
            store.add_passkey(&key(&ann, "c3"), now, 2).unwrap(),
            PasskeyAdd::Added(3)
        );
        assert_eq!(store.remove_passkeys("ann", Utc::now()).unwrap(), Some(2));
        assert_eq!(store.remove_passkeys("nobody", Utc::now()).unwrap(), None);
        assert_eq!(
            store.add_passkey(&key(&ann, "c4"), now, 2).unwrap(),
            PasskeyAdd::Stale,
            "an admin reset ends registrations in flight"
        );
        assert!(store.passkeys("ann").unwrap().is_empty());
    }

    #[test]
    fn a_counter_update_is_compare_and_set_and_an_account_takes_its_passkeys_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = RelationalStore::open(dir.path()).unwrap();
        let ann = account(&store, "ann");
        account(&store, "bob");
        store
            .add_passkey(&key(&ann, "c1"), ann.passkey_epoch, 10)
            .unwrap();
        let t = Utc::now();
        assert!(store
            .passkey_used("c1", "{\"counter\":0}", Some("{\"counter\":1}"), t)
            .unwrap());
        assert!(store
            .passkey_used("c1", "{\"counter\":0}", Some("{\"counter\":9}"), t)
            .unwrap());
        let p = store.passkey("c1").unwrap().unwrap();
        assert_eq!(
            (p.passkey.as_str(), p.last_used_at),
            ("{\"counter\":1}", Some(t))
        );
        assert!(!store.passkey_used("nope", "", None, t).unwrap());
        store.delete_user("ann").unwrap();
        assert_eq!(store.passkey("c1").unwrap(), None);
        let imported = PasskeyRecord {
            username: "bob".into(),
            user_uuid: "bob-handle".into(),
            ..key(&ann, "c9")
        };
        let orphan = PasskeyRecord {
            username: "gone".into(),
            ..key(&ann, "c8")
        };
        assert_eq!(
            store.import_passkeys(&[imported.clone(), orphan]).unwrap(),
            1
        );
        assert_eq!(store.import_passkeys(&[imported]).unwrap(), 0, "once");
        assert_eq!(store.passkeys("bob").unwrap().len(), 1);
    }
}
