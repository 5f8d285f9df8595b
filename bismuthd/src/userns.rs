//! Each container's user namespace: its uids and gids 0–65535 are a block
//! of host ids no other live container has. The block follows the
//! container's network slot (held by container id, never given to two live
//! containers, released with it, and kept across bismuthd restarts in the
//! container's label), so block `slot` starts at `--uid-base + slot × 65536`.

/// Ids a container has: 0–65535, like a whole host.
pub const IDS_PER_CONTAINER: u32 = 1 << 16;

/// How a container's ids map to the host's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdMap {
    base: u32,
}

impl IdMap {
    /// No user namespace: ids are the host's (gVisor's sandbox, whose own
    /// kernel stands between the function and the host).
    pub const HOST: IdMap = IdMap { base: 0 };

    /// The block of network slot `slot`; [`check_range`] has made sure it fits.
    pub fn for_slot(uid_base: u32, slot: u32) -> IdMap {
        IdMap {
            base: uid_base + slot * IDS_PER_CONTAINER,
        }
    }

    /// The host id of the container's `id`.
    pub fn host(self, id: u32) -> u32 {
        self.base + id
    }

    /// Whether the container gets a user namespace.
    pub fn is_mapped(self) -> bool {
        self.base != 0
    }
}

/// Checks that `slots` blocks from `uid_base` are above the host's own users
/// and below the largest id (`u32::MAX` means "no id" to the kernel).
pub fn check_range(uid_base: u32, slots: u32) -> Result<(), String> {
    if uid_base < IDS_PER_CONTAINER {
        return Err(format!(
            "--uid-base must be at least {IDS_PER_CONTAINER}, above the host's own users"
        ));
    }
    let end = u64::from(uid_base) + u64::from(slots) * u64::from(IDS_PER_CONTAINER);
    if end > u64::from(u32::MAX) {
        return Err(format!(
            "--uid-base {uid_base} leaves no room for {slots} containers of {IDS_PER_CONTAINER} ids \
             (one per address of --container-net): lower it or use a smaller range"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_follow_slots_without_overlap() {
        let a = IdMap::for_slot(1 << 30, 0);
        let b = IdMap::for_slot(1 << 30, 1);
        assert_eq!(a.host(0), 1 << 30);
        assert_eq!(a.host(1000), (1 << 30) + 1000);
        assert_eq!(b.host(0), a.host(IDS_PER_CONTAINER - 1) + 1);
        assert!(a.is_mapped() && !IdMap::HOST.is_mapped());
        assert_eq!(IdMap::HOST.host(1000), 1000);
    }

    #[test]
    fn the_range_must_fit_between_host_users_and_the_largest_id() {
        assert!(check_range(1 << 30, 1 << 14).is_ok());
        assert!(check_range(1 << 30, (3 << 14) - 1).is_ok());
        assert!(check_range(1 << 30, 3 << 14)
            .unwrap_err()
            .contains("no room"));
        assert!(check_range(1000, 4).unwrap_err().contains("at least"));
    }
}
