//! Quotas (from a function's `svc_quotas`) and the usage they limit.

use bismuth_model::SvcQuotas;

use super::StoreError;

/// Limits for a service group; `None` is unlimited.
pub type Quotas = SvcQuotas;

/// What a service group stores now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Bytes of K/V keys plus values.
    pub kv_bytes: u64,
    /// Number of K/V entries.
    pub kv_keys: u64,
    /// Bytes of blob contents.
    pub blob_bytes: u64,
    /// Number of blobs.
    pub blob_count: u64,
}

impl Usage {
    /// Fails if `self` (the usage after a write) exceeds any quota.
    pub fn check(&self, quotas: &Quotas) -> Result<(), StoreError> {
        let checks = [
            ("kv_bytes", quotas.kv_bytes, self.kv_bytes),
            ("kv_keys", quotas.kv_keys, self.kv_keys),
            ("blob_bytes", quotas.blob_bytes, self.blob_bytes),
            ("blob_count", quotas.blob_count, self.blob_count),
        ];
        for (quota, limit, needed) in checks {
            if let Some(limit) = limit {
                if needed > limit {
                    return Err(StoreError::Quota {
                        quota,
                        limit,
                        needed,
                    });
                }
            }
        }
        Ok(())
    }

    /// Usage after replacing an entry of `old` bytes (if any) with `new` bytes.
    pub fn with_kv(mut self, old: Option<u64>, new: Option<u64>) -> Self {
        self.kv_bytes = self.kv_bytes - old.unwrap_or(0) + new.unwrap_or(0);
        self.kv_keys = self.kv_keys - u64::from(old.is_some()) + u64::from(new.is_some());
        self
    }

    /// Usage after replacing a blob of `old` bytes (if any) with `new` bytes.
    pub fn with_blob(mut self, old: Option<u64>, new: Option<u64>) -> Self {
        self.blob_bytes = self.blob_bytes - old.unwrap_or(0) + new.unwrap_or(0);
        self.blob_count = self.blob_count - u64::from(old.is_some()) + u64::from(new.is_some());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounting_and_limits() {
        let u = Usage::default()
            .with_kv(None, Some(10))
            .with_kv(None, Some(5));
        assert_eq!((u.kv_bytes, u.kv_keys), (15, 2));
        let u = u.with_kv(Some(10), Some(3));
        assert_eq!((u.kv_bytes, u.kv_keys), (8, 2));
        let u = u.with_kv(Some(3), None);
        assert_eq!((u.kv_bytes, u.kv_keys), (5, 1));

        let q = Quotas {
            kv_keys: Some(1),
            ..Default::default()
        };
        assert!(u.check(&q).is_ok());
        let err = u.with_kv(None, Some(1)).check(&q).unwrap_err();
        assert_eq!(
            err.to_string(),
            "quota kv_keys exceeded: limit 1, the write needs 2"
        );
    }
}
