//! What a restore may grant: owners, set-id bits and privileged extended
//! attributes (`docs/invariants.md`, invariant 8).
//!
//! Streams record each entry's numeric uid and gid. A restore running as
//! root applies them ([`Owners::AsSaved`], tar's `--numeric-owner`
//! semantics: ids, never names) or gives the whole tree to one user
//! ([`Owners::Map`], how a fleet host hands a project to its local project
//! user). A restore that is not root cannot set owners
//! ([`Owners::Unprivileged`]): every entry belongs to the restoring user.
//!
//! Whatever the policy, a restore never creates a set-id file owned by
//! root (uid or gid 0): the owner is set before the mode, so the kernel
//! cannot keep a bit that was meant for another owner, and the bits
//! themselves are filtered here. File capabilities (`security.capability`)
//! are never restored, since they grant privilege whoever owns the file;
//! without root, `security.*` and `trusted.*` are skipped. Directories keep
//! their set-group-id bit (it only makes new entries inherit the group).

/// How owners recorded in a stream are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owners {
    /// The restoring process is not root: owners are not applied, set-id
    /// bits of files are dropped, `security.*` and `trusted.*` extended
    /// attributes are skipped.
    Unprivileged,
    /// Root: every entry gets the uid and gid recorded in the stream.
    AsSaved,
    /// Root: every entry is owned by `uid:gid`.
    Map {
        /// The owner.
        uid: u32,
        /// The group.
        gid: u32,
    },
}

impl Owners {
    /// [`Owners::AsSaved`] for root, [`Owners::Unprivileged`] otherwise.
    pub fn for_this_process() -> Self {
        if super::nofollow::can_chown() {
            Owners::AsSaved
        } else {
            Owners::Unprivileged
        }
    }

    /// The owner to give an entry recorded with `uid:gid`, or `None` when
    /// owners are not applied.
    pub fn owner(self, uid: u32, gid: u32) -> Option<(u32, u32)> {
        match self {
            Owners::Unprivileged => None,
            Owners::AsSaved => Some((uid, gid)),
            Owners::Map { uid, gid } => Some((uid, gid)),
        }
    }

    /// The permission bits to give a non-directory recorded with `mode` and
    /// `uid:gid`: the recorded bits without the set-id bits this policy
    /// cannot grant (see the module docs). Directories keep their mode.
    pub fn mode(self, mode: u32, uid: u32, gid: u32, is_dir: bool) -> u32 {
        let mode = mode & 0o7777;
        if is_dir {
            return mode;
        }
        let drop = match self.owner(uid, gid) {
            None => 0o6000,
            Some((u, g)) => (if u == 0 { 0o4000 } else { 0 }) | (if g == 0 { 0o2000 } else { 0 }),
        };
        mode & !drop
    }

    /// True when an extended attribute called `name` may be restored.
    pub fn allows_xattr(self, name: &[u8]) -> bool {
        if name == b"security.capability" {
            return false;
        }
        match self {
            Owners::Unprivileged => {
                !(name.starts_with(b"security.") || name.starts_with(b"trusted."))
            }
            Owners::AsSaved | Owners::Map { .. } => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Owners::{self, *};

    #[test]
    fn set_id_bits_never_go_to_root_or_to_an_unprivileged_restore() {
        // A user's setuid copy of a shell, recorded as uid 1000.
        assert_eq!(AsSaved.mode(0o4755, 1000, 1000, false), 0o4755);
        // A root-owned setuid file (or a stream that claims one) loses it.
        assert_eq!(AsSaved.mode(0o4755, 0, 1000, false), 0o755);
        assert_eq!(AsSaved.mode(0o6755, 1000, 0, false), 0o4755);
        // Mapped to a project user: kept; mapped to root: dropped.
        assert_eq!(
            Map {
                uid: 2000,
                gid: 2000
            }
            .mode(0o6755, 0, 0, false),
            0o6755
        );
        assert_eq!(
            Map { uid: 0, gid: 0 }.mode(0o6755, 1000, 1000, false),
            0o755
        );
        // Not root: dropped, whoever owned it.
        assert_eq!(Unprivileged.mode(0o6755, 1000, 1000, false), 0o755);
        // Directories keep set-group-id and sticky bits.
        assert_eq!(Unprivileged.mode(0o3775, 0, 0, true), 0o3775);
    }

    #[test]
    fn privileged_xattrs() {
        for o in [AsSaved, Map { uid: 1, gid: 1 }, Unprivileged] {
            assert!(!o.allows_xattr(b"security.capability"), "{o:?}");
            assert!(o.allows_xattr(b"user.note"), "{o:?}");
        }
        assert!(AsSaved.allows_xattr(b"trusted.x"));
        assert!(AsSaved.allows_xattr(b"security.selinux"));
        assert!(!Unprivileged.allows_xattr(b"trusted.x"));
        assert!(!Unprivileged.allows_xattr(b"security.selinux"));
        let _: Owners = Owners::for_this_process();
    }
}
