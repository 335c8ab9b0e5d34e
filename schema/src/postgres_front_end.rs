//! The front-end half of the PostgreSQL engine. Two tenants asking for one host meet at
//! the unique constraint (`address_taken`).

use async_trait::async_trait;
use jiff::Timestamp;
use tokio_postgres::Row;

use crate::error::{StoreError, StoreResult};
use crate::front_end_store::{FrontEnd, FrontEndChange, FrontEndStore, Logo};
use crate::ids::TenantId;
use crate::model::Audit;
use crate::postgres::{pg, PgStore};

fn sha256_of(bytes: Option<Vec<u8>>) -> StoreResult<Option<[u8; 32]>> {
    bytes
        .map(|b| <[u8; 32]>::try_from(b.as_slice()).map_err(StoreError::backend))
        .transpose()
}

fn front_end_from_row(r: &Row) -> StoreResult<FrontEnd> {
    Ok(FrontEnd {
        public_url: r.try_get(0).map_err(pg)?,
        title: r.try_get(1).map_err(pg)?,
        accent_color: r.try_get(2).map_err(pg)?,
        logo_sha256: sha256_of(r.try_get(3).map_err(pg)?)?,
        updated_at: Some(r.try_get(4).map_err(pg)?),
    })
}

#[async_trait]
impl FrontEndStore for PgStore {
    async fn get_front_end(&self, tenant: TenantId) -> StoreResult<FrontEnd> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT public_url, title, accent_color, logo_sha256, updated_at \
                 FROM tenant_front_ends WHERE tenant_id = $1",
            )
            .await
            .map_err(pg)?;
        match c.query_opt(&st, &[&tenant.0]).await.map_err(pg)? {
            Some(row) => front_end_from_row(&row),
            None => Ok(FrontEnd::default()),
        }
    }

    async fn set_front_end(
        &self,
        tenant: TenantId,
        change: FrontEndChange,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<()> {
        let (sql, a, b) = match change {
            FrontEndChange::Look {
                title,
                accent_color,
            } => (
                "INSERT INTO tenant_front_ends (tenant_id, title, accent_color, updated_at) \
                 VALUES ($1,$2,$3,$4) ON CONFLICT (tenant_id) DO UPDATE SET \
                 title = excluded.title, accent_color = excluded.accent_color, \
                 updated_at = excluded.updated_at",
                title,
                accent_color,
            ),
            FrontEndChange::Address { public_url, host } => (
                "INSERT INTO tenant_front_ends (tenant_id, public_url, host, updated_at) \
                 VALUES ($1,$2,$3,$4) ON CONFLICT (tenant_id) DO UPDATE SET \
                 public_url = excluded.public_url, host = excluded.host, \
                 updated_at = excluded.updated_at",
                public_url,
                host,
            ),
        };
        self.change_one(sql, &[&tenant.0, &a, &b, &now], &audit)
            .await
    }

    async fn set_front_end_logo(
        &self,
        tenant: TenantId,
        logo: Option<Logo>,
        now: Timestamp,
        audit: Audit,
    ) -> StoreResult<()> {
        let (bytes, content_type, sha256) = match logo {
            Some(l) => (Some(l.bytes), Some(l.content_type), Some(l.sha256.to_vec())),
            None => (None, None, None),
        };
        self.change_one(
            "INSERT INTO tenant_front_ends \
             (tenant_id, logo, logo_type, logo_sha256, updated_at) VALUES ($1,$2,$3,$4,$5) \
             ON CONFLICT (tenant_id) DO UPDATE SET logo = excluded.logo, \
             logo_type = excluded.logo_type, logo_sha256 = excluded.logo_sha256, \
             updated_at = excluded.updated_at",
            &[&tenant.0, &bytes, &content_type, &sha256, &now],
            &audit,
        )
        .await
    }

    async fn tenant_at_host(&self, host: String) -> StoreResult<Option<TenantId>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached("SELECT tenant_id FROM tenant_front_ends WHERE host = $1")
            .await
            .map_err(pg)?;
        Ok(c.query_opt(&st, &[&host])
            .await
            .map_err(pg)?
            .map(|r| TenantId(r.get(0))))
    }

    async fn get_logo(&self, sha256: [u8; 32]) -> StoreResult<Logo> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT logo, logo_type FROM tenant_front_ends WHERE logo_sha256 = $1 LIMIT 1",
                &[&&sha256[..]],
            )
            .await
            .map_err(pg)?
            .ok_or(StoreError::NotFound)?;
        Ok(Logo {
            bytes: row.try_get(0).map_err(pg)?,
            content_type: row.try_get(1).map_err(pg)?,
            sha256,
        })
    }
}
