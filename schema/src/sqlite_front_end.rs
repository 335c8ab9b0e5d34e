//! The front-end half of the SQLite engine. The single writer checks that no other tenant
//! has the host before it writes (the unique column is the backstop).

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{params, OptionalExtension, Row};

use crate::error::StoreResult;
use crate::front_end_store::{address_taken, FrontEnd, FrontEndChange, FrontEndStore, Logo};
use crate::ids::TenantId;
use crate::model::Audit;
use crate::sqlite::{change_one, db, ms, ts, uuid_col, SqliteStore};
use crate::StoreError;

fn sha256_col(r: &Row, idx: usize) -> rusqlite::Result<Option<[u8; 32]>> {
    let bytes: Option<Vec<u8>> = r.get(idx)?;
    bytes
        .map(|b| {
            <[u8; 32]>::try_from(b.as_slice()).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    idx,
                    rusqlite::types::Type::Blob,
                    Box::new(e),
                )
            })
        })
        .transpose()
}

fn front_end_row(r: &Row) -> rusqlite::Result<FrontEnd> {
    Ok(FrontEnd {
        public_url: r.get(0)?,
        title: r.get(1)?,
        accent_color: r.get(2)?,
        logo_sha256: sha256_col(r, 3)?,
        updated_at: Some(ts(r.get(4)?)),
    })
}

#[async_trait]
impl FrontEndStore for SqliteStore {
    async fn get_front_end(&self, tenant: TenantId) -> StoreResult<FrontEnd> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT public_url, title, accent_color, logo_sha256, updated_at \
                 FROM tenant_front_ends WHERE tenant_id = ?",
            )
            .and_then(|mut st| st.query_row([tenant.to_string()], front_end_row).optional())
            .map(Option::unwrap_or_default)
            .map_err(db)
        })
        .await
    }

    async fn set_front_end(
        &self,
        tenant: TenantId,
        change: FrontEndChange,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            let (sql, a, b) = match change {
                FrontEndChange::Look {
                    title,
                    accent_color,
                } => (
                    "INSERT INTO tenant_front_ends (tenant_id, title, accent_color, updated_at) \
                     VALUES (?,?,?,?) ON CONFLICT (tenant_id) DO UPDATE SET \
                     title = excluded.title, accent_color = excluded.accent_color, \
                     updated_at = excluded.updated_at",
                    title,
                    accent_color,
                ),
                FrontEndChange::Address { public_url, host } => {
                    if let Some(host) = &host {
                        let taken: bool = c
                            .query_row(
                                "SELECT EXISTS (SELECT 1 FROM tenant_front_ends \
                                 WHERE host = ? AND tenant_id <> ?)",
                                params![host, tenant.to_string()],
                                |r| r.get(0),
                            )
                            .map_err(db)?;
                        if taken {
                            return Err(address_taken());
                        }
                    }
                    (
                        "INSERT INTO tenant_front_ends (tenant_id, public_url, host, updated_at) \
                         VALUES (?,?,?,?) ON CONFLICT (tenant_id) DO UPDATE SET \
                         public_url = excluded.public_url, host = excluded.host, \
                         updated_at = excluded.updated_at",
                        public_url,
                        host,
                    )
                }
            };
            change_one(c, sql, params![tenant.to_string(), a, b, ms(now)], &audit)
        })
        .await
    }

    async fn set_front_end_logo(
        &self,
        tenant: TenantId,
        logo: Option<Logo>,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<()> {
        self.write(move |c| {
            let (bytes, content_type, sha256) = match logo {
                Some(l) => (Some(l.bytes), Some(l.content_type), Some(l.sha256.to_vec())),
                None => (None, None, None),
            };
            change_one(
                c,
                "INSERT INTO tenant_front_ends \
                 (tenant_id, logo, logo_type, logo_sha256, updated_at) VALUES (?,?,?,?,?) \
                 ON CONFLICT (tenant_id) DO UPDATE SET logo = excluded.logo, \
                 logo_type = excluded.logo_type, logo_sha256 = excluded.logo_sha256, \
                 updated_at = excluded.updated_at",
                params![tenant.to_string(), bytes, content_type, sha256, ms(now)],
                &audit,
            )
        })
        .await
    }

    async fn tenant_at_host(&self, host: String) -> StoreResult<Option<TenantId>> {
        self.read(move |c| {
            c.prepare_cached("SELECT tenant_id FROM tenant_front_ends WHERE host = ?")
                .and_then(|mut st| {
                    st.query_row([host], |r| uuid_col(r, 0).map(TenantId))
                        .optional()
                })
                .map_err(db)
        })
        .await
    }

    async fn get_logo(&self, sha256: [u8; 32]) -> StoreResult<Logo> {
        self.read(move |c| {
            c.query_row(
                "SELECT logo, logo_type FROM tenant_front_ends WHERE logo_sha256 = ? LIMIT 1",
                [&sha256[..]],
                |r| {
                    Ok(Logo {
                        bytes: r.get(0)?,
                        content_type: r.get(1)?,
                        sha256,
                    })
                },
            )
            .optional()
            .map_err(db)?
            .ok_or(StoreError::NotFound)
        })
        .await
    }
}
