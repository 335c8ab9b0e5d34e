//! What a sub-admin may see and change in the directory (SPEC §11). A super admin sees
//! the whole tenant. A sub-admin sees the users of the departments their group grants
//! (each with everything under it) and of the tags it grants; `view` reads, `manage`
//! reads and changes. Handlers of departments, tags and users ask `DirectoryScope`;
//! the features (payments and the rest) are checked by the access rules in `auth`.
//!
//! A sub-admin changes only the memberships inside what they manage: a user's
//! departments and tags outside it stay as they are, and every user they create or
//! change keeps at least one membership they manage, so nobody drops out of sight by
//! accident.

use std::collections::{HashMap, HashSet};

use onecard_schema::ids::{DepartmentId, TagId, TenantId, UserId};
use onecard_schema::model::{Department, GrantLevel, Grants, PageReq, User, UserFilter, UserScope};

use crate::auth::Caller;
use crate::problem::ApiError;
use crate::state::AppState;

/// The departments and tags of a sub-admin's group, departments expanded to their
/// subtrees.
#[derive(Clone, Debug, Default)]
pub struct Within {
    view_departments: HashSet<DepartmentId>,
    manage_departments: HashSet<DepartmentId>,
    view_tags: HashSet<TagId>,
    manage_tags: HashSet<TagId>,
}

#[derive(Clone, Debug)]
pub enum DirectoryScope {
    /// A super admin: everything of the tenant.
    All,
    /// A sub-admin: what their group grants.
    Within(Within),
}

/// 403 `out_of_scope`, naming the field that reaches outside the caller's scope.
fn out_of_scope(field: &str, detail: &str) -> ApiError {
    ApiError::forbidden("out_of_scope", format!("{field}: {detail}"))
}

impl DirectoryScope {
    /// The caller's scope. Reads the department tree only for a sub-admin whose group
    /// grants departments.
    pub async fn of(caller: &Caller, state: &AppState) -> Result<Self, ApiError> {
        let Some(grants) = caller.grants.as_deref() else {
            return Ok(DirectoryScope::All);
        };
        let departments = if grants.departments.is_empty() {
            Vec::new()
        } else {
            state.store.list_departments(caller.tenant()?).await?
        };
        Ok(DirectoryScope::Within(Within::expand(grants, &departments)))
    }

    /// The caller's scope over a department tree the handler has already read.
    pub fn over(caller: &Caller, departments: &[Department]) -> Self {
        match caller.grants.as_deref() {
            None => DirectoryScope::All,
            Some(grants) => DirectoryScope::Within(Within::expand(grants, departments)),
        }
    }

    /// Whether this is a sub-admin's scope (a super admin's is everything).
    pub fn is_limited(&self) -> bool {
        matches!(self, DirectoryScope::Within(_))
    }

    pub fn sees_department(&self, id: DepartmentId) -> bool {
        match self {
            DirectoryScope::All => true,
            DirectoryScope::Within(w) => w.view_departments.contains(&id),
        }
    }

    pub fn manages_department(&self, id: DepartmentId) -> bool {
        match self {
            DirectoryScope::All => true,
            DirectoryScope::Within(w) => w.manage_departments.contains(&id),
        }
    }

    pub fn sees_tag(&self, id: TagId) -> bool {
        match self {
            DirectoryScope::All => true,
            DirectoryScope::Within(w) => w.view_tags.contains(&id),
        }
    }

    pub fn sees_user(&self, user: &User) -> bool {
        match self {
            DirectoryScope::All => true,
            DirectoryScope::Within(w) => {
                user.department_ids
                    .iter()
                    .any(|d| w.view_departments.contains(d))
                    || user.tag_ids.iter().any(|t| w.view_tags.contains(t))
            }
        }
    }

    pub fn manages_user(&self, user: &User) -> bool {
        match self {
            DirectoryScope::All => true,
            DirectoryScope::Within(w) => w.manages(&user.department_ids, &user.tag_ids),
        }
    }

    /// A user the caller may see, or 404 (another scope's users are as unknown as
    /// another tenant's); one they see but may not change is 403.
    pub fn check_manages(&self, user: &User) -> Result<(), ApiError> {
        if !self.sees_user(user) {
            return Err(ApiError::NotFound);
        }
        if !self.manages_user(user) {
            return Err(out_of_scope(
                "id",
                "your admin group may view this user but not change them",
            ));
        }
        Ok(())
    }

    /// A new user's memberships: all inside what the caller manages, and at least one.
    pub fn check_new_user(
        &self,
        departments: &[DepartmentId],
        tags: &[TagId],
    ) -> Result<(), ApiError> {
        let DirectoryScope::Within(w) = self else {
            return Ok(());
        };
        if let Some(d) = departments
            .iter()
            .find(|d| !w.manage_departments.contains(d))
        {
            return Err(out_of_scope(
                "department_ids",
                &format!("department {d} is outside what your admin group manages"),
            ));
        }
        if let Some(t) = tags.iter().find(|t| !w.manage_tags.contains(t)) {
            return Err(out_of_scope(
                "tag_ids",
                &format!("tag {t} is outside what your admin group manages"),
            ));
        }
        if departments.is_empty() && tags.is_empty() {
            return Err(out_of_scope(
                "department_ids",
                "put the user in a department or tag your admin group manages",
            ));
        }
        Ok(())
    }

    /// A change of a user's memberships (`None`: unchanged): the memberships outside
    /// what the caller manages stay exactly as they were, and the user keeps at least
    /// one the caller manages.
    pub fn check_change(
        &self,
        user: &User,
        departments: Option<&[DepartmentId]>,
        tags: Option<&[TagId]>,
    ) -> Result<(), ApiError> {
        let DirectoryScope::Within(w) = self else {
            return Ok(());
        };
        let new_departments = departments.unwrap_or(&user.department_ids);
        let new_tags = tags.unwrap_or(&user.tag_ids);
        let outside_d = |ds: &[DepartmentId]| -> HashSet<DepartmentId> {
            ds.iter()
                .filter(|d| !w.manage_departments.contains(d))
                .copied()
                .collect()
        };
        let outside_t = |ts: &[TagId]| -> HashSet<TagId> {
            ts.iter()
                .filter(|t| !w.manage_tags.contains(t))
                .copied()
                .collect()
        };
        if outside_d(new_departments) != outside_d(&user.department_ids) {
            return Err(out_of_scope(
                "department_ids",
                "only departments your admin group manages may be added or removed",
            ));
        }
        if outside_t(new_tags) != outside_t(&user.tag_ids) {
            return Err(out_of_scope(
                "tag_ids",
                "only tags your admin group manages may be added or removed",
            ));
        }
        if !w.manages(new_departments, new_tags) {
            return Err(out_of_scope(
                "department_ids",
                "the user would leave everything your admin group manages",
            ));
        }
        Ok(())
    }

    /// The users of `ids` (deduplicated) the caller sees, read at once; 422 on `field`
    /// (`exists`) unless they see every one (another scope's users are as unknown as
    /// another tenant's).
    pub async fn visible_users(
        &self,
        state: &AppState,
        tenant: TenantId,
        field: &str,
        ids: &[UserId],
    ) -> Result<Vec<User>, ApiError> {
        let mut ids = ids.to_vec();
        ids.sort();
        ids.dedup();
        let filter = UserFilter {
            within: self.user_filter(),
            ids: Some(ids.clone()),
            ..UserFilter::default()
        };
        let page = PageReq {
            limit: u32::try_from(ids.len()).unwrap_or(u32::MAX),
            after: None,
        };
        let users = state.store.list_users(tenant, filter, page).await?.items;
        if users.len() != ids.len() {
            return Err(ApiError::invalid_field(
                field,
                "exists",
                "one or more user_ids do not exist",
            ));
        }
        Ok(users)
    }

    /// The store filter that limits a user list to what the caller sees.
    pub fn user_filter(&self) -> Option<UserScope> {
        match self {
            DirectoryScope::All => None,
            DirectoryScope::Within(w) => Some(UserScope {
                department_ids: sorted(&w.view_departments),
                tag_ids: sorted(&w.view_tags),
            }),
        }
    }
}

fn sorted<T: Copy + Ord>(set: &HashSet<T>) -> Vec<T> {
    let mut v: Vec<T> = set.iter().copied().collect();
    v.sort();
    v
}

impl Within {
    /// Expands the granted departments to their subtrees; `manage` implies `view`.
    pub fn expand(grants: &Grants, departments: &[Department]) -> Self {
        let mut children: HashMap<DepartmentId, Vec<DepartmentId>> = HashMap::new();
        for d in departments {
            if let Some(p) = d.parent_id {
                children.entry(p).or_default().push(d.id);
            }
        }
        let subtree = |root: DepartmentId, into: &mut HashSet<DepartmentId>| {
            let mut stack = vec![root];
            while let Some(id) = stack.pop() {
                if into.insert(id) {
                    stack.extend(children.get(&id).into_iter().flatten().copied());
                }
            }
        };
        let mut w = Within::default();
        for g in &grants.departments {
            subtree(g.id, &mut w.view_departments);
            if g.access == GrantLevel::Manage {
                subtree(g.id, &mut w.manage_departments);
            }
        }
        for g in &grants.tags {
            w.view_tags.insert(g.id);
            if g.access == GrantLevel::Manage {
                w.manage_tags.insert(g.id);
            }
        }
        w
    }

    fn manages(&self, departments: &[DepartmentId], tags: &[TagId]) -> bool {
        departments
            .iter()
            .any(|d| self.manage_departments.contains(d))
            || tags.iter().any(|t| self.manage_tags.contains(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;
    use onecard_schema::ids::UserId;
    use onecard_schema::model::{DepartmentGrant, TagGrant, UserStatus};

    fn dept(parent: Option<DepartmentId>) -> Department {
        Department {
            id: DepartmentId::new(),
            name: "d".into(),
            parent_id: parent,
            created_at: Timestamp::UNIX_EPOCH,
        }
    }

    fn user(departments: &[DepartmentId], tags: &[TagId]) -> User {
        User {
            id: UserId::new(),
            name: "u".into(),
            number: "1".into(),
            phone: None,
            id_last4: None,
            identity: None,
            status: UserStatus::Active,
            department_ids: departments.to_vec(),
            tag_ids: tags.to_vec(),
            created_at: Timestamp::UNIX_EPOCH,
            updated_at: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_grant_reaches_the_whole_subtree_and_manage_implies_view() {
        let (teaching, other) = (dept(None), dept(None));
        let maths = dept(Some(teaching.id));
        let algebra = dept(Some(maths.id));
        let tag = TagId::new();
        let grants = Grants {
            departments: vec![
                DepartmentGrant {
                    id: teaching.id,
                    access: GrantLevel::View,
                },
                DepartmentGrant {
                    id: maths.id,
                    access: GrantLevel::Manage,
                },
            ],
            tags: vec![TagGrant {
                id: tag,
                access: GrantLevel::Manage,
            }],
            ..Grants::default()
        };
        let all = [
            teaching.clone(),
            other.clone(),
            maths.clone(),
            algebra.clone(),
        ];
        let scope = DirectoryScope::Within(Within::expand(&grants, &all));
        assert!(scope.sees_department(teaching.id) && !scope.manages_department(teaching.id));
        assert!(scope.manages_department(algebra.id) && scope.sees_department(algebra.id));
        assert!(!scope.sees_department(other.id));
        assert!(scope.sees_tag(tag));

        let in_teaching = user(&[teaching.id], &[]);
        assert!(scope.sees_user(&in_teaching) && !scope.manages_user(&in_teaching));
        assert!(matches!(
            scope.check_manages(&in_teaching),
            Err(ApiError::Forbidden { .. })
        ));
        let elsewhere = user(&[other.id], &[]);
        assert!(matches!(
            scope.check_manages(&elsewhere),
            Err(ApiError::NotFound)
        ));
        assert!(scope.manages_user(&user(&[other.id], &[tag])));

        assert!(scope.check_new_user(&[algebra.id], &[]).is_ok());
        assert!(scope.check_new_user(&[], &[tag]).is_ok());
        assert!(scope.check_new_user(&[], &[]).is_err());
        assert!(scope.check_new_user(&[algebra.id, other.id], &[]).is_err());
        assert!(DirectoryScope::All.check_new_user(&[], &[]).is_ok());
    }

    #[test]
    fn a_change_keeps_what_lies_outside_and_one_membership_inside() {
        let (maths, other) = (dept(None), dept(None));
        let algebra = dept(Some(maths.id));
        let grants = Grants {
            departments: vec![DepartmentGrant {
                id: maths.id,
                access: GrantLevel::Manage,
            }],
            ..Grants::default()
        };
        let scope = DirectoryScope::Within(Within::expand(
            &grants,
            &[maths.clone(), other.clone(), algebra.clone()],
        ));
        let u = user(&[maths.id, other.id], &[]);
        // Moving inside the managed subtree, keeping the other department: fine.
        assert!(scope
            .check_change(&u, Some(&[algebra.id, other.id]), None)
            .is_ok());
        // Dropping the department outside, or adding another outside: refused.
        assert!(scope.check_change(&u, Some(&[algebra.id]), None).is_err());
        assert!(scope
            .check_change(&u, Some(&[maths.id, other.id]), Some(&[TagId::new()]))
            .is_err());
        // Leaving every managed membership: refused.
        assert!(scope.check_change(&u, Some(&[other.id]), None).is_err());
        // Fields other than memberships: fine.
        assert!(scope.check_change(&u, None, None).is_ok());
    }
}
