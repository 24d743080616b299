//! What a request needs and what a caller may do, in the terms of Docker's token spec:
//! actions (`pull`, `push`, `delete`) on repositories, and `registry:catalog:*`. Pure
//! functions, so every mapping is tested without a server.

use std::collections::BTreeMap;
use std::fmt;

use axum::http::Method;
use serde::{Deserialize, Serialize};

use crate::api::Route;
use crate::name::RepoName;

/// A set of the three repository actions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Actions(u8);

impl Actions {
    /// No action.
    pub const NONE: Actions = Actions(0);
    /// Reading manifests, blobs, tags and referrers.
    pub const PULL: Actions = Actions(1);
    /// Uploading blobs and putting manifests and tags.
    pub const PUSH: Actions = Actions(2);
    /// Deleting manifests, tags and blob links.
    pub const DELETE: Actions = Actions(4);
    /// Every action (`*`).
    pub const ALL: Actions = Actions(7);

    const NAMES: [(Actions, &'static str); 3] = [
        (Actions::PULL, "pull"),
        (Actions::PUSH, "push"),
        (Actions::DELETE, "delete"),
    ];

    /// Both sets.
    pub const fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    /// What both sets hold.
    pub const fn intersect(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }

    /// True when every action of `other` is in this set.
    pub const fn contains(self, other: Actions) -> bool {
        self.0 & other.0 == other.0
    }

    /// True for the empty set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Parses `pull,push`; `*` is every action and unknown names are ignored (a client may
    /// ask for actions this registry does not know; it simply does not get them).
    pub fn parse_list(list: &str) -> Actions {
        list.split(',').fold(Actions::NONE, |set, name| {
            set.union(Actions::from_name(name.trim()))
        })
    }

    fn from_name(name: &str) -> Actions {
        if name == "*" {
            return Actions::ALL;
        }
        Actions::NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map_or(Actions::NONE, |(a, _)| *a)
    }

    /// The names in the set, in the spec's order.
    pub fn names(self) -> Vec<&'static str> {
        Actions::NAMES
            .iter()
            .filter(|(a, _)| self.contains(*a))
            .map(|(_, n)| *n)
            .collect()
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

/// One thing a caller asks for or holds: actions on a repository, or the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `repository:<name>:<actions>`.
    Repository(RepoName, Actions),
    /// `registry:catalog:*`, listing every repository.
    Catalog,
}

impl Scope {
    /// Parses one scope as the token endpoint receives it. Docker may add a class to the type
    /// (`repository(plugin)`); it is ignored. Scopes of other types, names that are not
    /// repository names, and requests for no known action are `None`: never granted.
    pub fn parse(text: &str) -> Option<Scope> {
        let (kind, rest) = text.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        let kind = kind.split_once('(').map_or(kind, |(k, _)| k);
        match kind {
            "repository" => {
                let actions = Actions::parse_list(actions);
                (!actions.is_empty()).then_some(())?;
                Some(Scope::Repository(name.parse().ok()?, actions))
            }
            "registry" if name == "catalog" && Actions::parse_list(actions) == Actions::ALL => {
                Some(Scope::Catalog)
            }
            _ => None,
        }
    }

    /// Every scope in the `scope` parameters of a token request; each may hold several,
    /// separated by spaces (OAuth2's form).
    pub fn parse_all<'a>(params: impl IntoIterator<Item = &'a str>) -> Vec<Scope> {
        params
            .into_iter()
            .flat_map(str::split_whitespace)
            .filter_map(Scope::parse)
            .collect()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Repository(name, actions) => {
                write!(f, "repository:{}:{actions}", name.as_str())
            }
            Scope::Catalog => f.write_str("registry:catalog:*"),
        }
    }
}

/// A token's `access` claim entry, the JSON shape Docker's token spec gives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The repository name, or `catalog`.
    pub name: String,
    /// Action names.
    pub actions: Vec<String>,
}

impl From<&Scope> for AccessEntry {
    fn from(scope: &Scope) -> Self {
        match scope {
            Scope::Repository(name, actions) => AccessEntry {
                kind: "repository".to_owned(),
                name: name.as_str().to_owned(),
                actions: actions.names().into_iter().map(str::to_owned).collect(),
            },
            Scope::Catalog => AccessEntry {
                kind: "registry".to_owned(),
                name: "catalog".to_owned(),
                actions: vec!["*".to_owned()],
            },
        }
    }
}

/// What a caller holds: actions per repository, and maybe the catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    repositories: BTreeMap<RepoName, Actions>,
    catalog: bool,
}

impl Grant {
    /// The grant a token's `access` claim carries; entries it cannot read grant nothing.
    pub fn from_entries(entries: &[AccessEntry]) -> Grant {
        let mut grant = Grant::default();
        for e in entries {
            let scope = format!("{}:{}:{}", e.kind, e.name, e.actions.join(","));
            if let Some(scope) = Scope::parse(&scope) {
                grant.add(&scope);
            }
        }
        grant
    }

    /// Adds a scope to the grant.
    pub fn add(&mut self, scope: &Scope) {
        match scope {
            Scope::Repository(name, actions) => {
                let held = self.repositories.entry(name.clone()).or_default();
                *held = held.union(*actions);
            }
            Scope::Catalog => self.catalog = true,
        }
    }

    /// The actions held on `name`.
    pub fn actions_on(&self, name: &RepoName) -> Actions {
        self.repositories.get(name).copied().unwrap_or_default()
    }

    /// Whether the catalog may be listed.
    pub fn catalog(&self) -> bool {
        self.catalog
    }
}

/// One condition a request must meet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// Any valid credentials or token, whatever it grants (`/v2/`, and paths the API does not
    /// know, so nothing unrecognised is ever open).
    Authenticated,
    /// These actions on this repository.
    Scope(Scope),
}

/// What a request needs, from its method and parsed route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Required {
    /// Every need must hold.
    pub needs: Vec<Need>,
    /// The `from` repository of a cross-repository mount: without pull on it, the mount is
    /// dropped and the request becomes a plain upload, as the spec allows.
    pub mount_from: Option<RepoName>,
}

impl Required {
    /// The scopes to name in a challenge: what the client should ask the token endpoint for.
    pub fn challenge_scopes(&self) -> Vec<Scope> {
        let mut scopes: Vec<Scope> = self
            .needs
            .iter()
            .filter_map(|n| match n {
                Need::Scope(s) => Some(s.clone()),
                Need::Authenticated => None,
            })
            .collect();
        if let Some(from) = &self.mount_from {
            scopes.push(Scope::Repository(from.clone(), Actions::PULL));
        }
        scopes
    }
}

/// The access a request needs, distribution's mapping: reads need `pull`; writes need `pull`
/// and `push` (a pusher reads back what it wrote); DELETE of a manifest or blob needs
/// `delete`, while cancelling an upload is part of pushing; the catalog needs
/// `registry:catalog:*`. `route` is `None` for a path the API does not know or cannot parse.
pub fn required(method: &Method, route: Option<&Route>, mount_from: Option<&str>) -> Required {
    let write = Actions::PULL.union(Actions::PUSH);
    let repo = |name: &RepoName, actions| Need::Scope(Scope::Repository(name.clone(), actions));
    let need = match route {
        None | Some(Route::Base) => Need::Authenticated,
        Some(Route::Catalog) => Need::Scope(Scope::Catalog),
        Some(Route::Upload(name, _) | Route::UploadStart(name)) => repo(name, write),
        Some(
            Route::Blob(name, _)
            | Route::Manifest(name, _)
            | Route::Tags(name)
            | Route::Referrers(name, _),
        ) => {
            if *method == Method::GET || *method == Method::HEAD {
                repo(name, Actions::PULL)
            } else if *method == Method::DELETE {
                repo(name, Actions::DELETE)
            } else {
                repo(name, write)
            }
        }
    };
    let mount_from = match route {
        Some(Route::UploadStart(_)) if *method == Method::POST => {
            mount_from.and_then(|f| f.parse().ok())
        }
        _ => None,
    };
    Required {
        needs: vec![need],
        mount_from,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::route;

    fn name(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    fn need(method: Method, path: &str) -> Need {
        let route = route::parse(path).ok().and_then(Result::ok);
        required(&method, route.as_ref(), None).needs.remove(0)
    }

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_scopes_as_docker_sends_them() {
        assert_eq!(
            Scope::parse("repository:team/app:pull,push"),
            Some(Scope::Repository(
                name("team/app"),
                Actions::PULL.union(Actions::PUSH)
            ))
        );
        assert_eq!(
            Scope::parse("repository(plugin):team/app:pull"),
            Some(Scope::Repository(name("team/app"), Actions::PULL))
        );
        assert_eq!(
            Scope::parse("repository:a:*"),
            Some(Scope::Repository(name("a"), Actions::ALL))
        );
        assert_eq!(Scope::parse("registry:catalog:*"), Some(Scope::Catalog));
        assert_eq!(Scope::parse("registry:catalog:pull"), None);
        assert_eq!(Scope::parse("repository:Bad/Name:pull"), None);
        assert_eq!(Scope::parse("repository:a:fly"), None);
        assert_eq!(Scope::parse("repository:a"), None);
        assert_eq!(Scope::parse("other:a:pull"), None);
        let all = Scope::parse_all(["repository:a:pull repository:b:push", "registry:catalog:*"]);
        assert_eq!(all.len(), 3);
        assert_eq!(all[1].to_string(), "repository:b:push");
    }

    #[test]
    fn an_access_claim_round_trips_through_a_grant() {
        let scopes = [
            Scope::Repository(name("a/b"), Actions::PULL.union(Actions::DELETE)),
            Scope::Catalog,
        ];
        let entries: Vec<AccessEntry> = scopes.iter().map(AccessEntry::from).collect();
        assert_eq!(entries[0].actions, ["pull", "delete"]);
        let grant = Grant::from_entries(&entries);
        assert_eq!(
            grant.actions_on(&name("a/b")),
            Actions::PULL.union(Actions::DELETE)
        );
        assert_eq!(grant.actions_on(&name("a")), Actions::NONE);
        assert!(grant.catalog());
        let junk = AccessEntry {
            kind: "repository".into(),
            name: "../x".into(),
            actions: vec!["pull".into()],
        };
        assert_eq!(Grant::from_entries(&[junk]), Grant::default());
    }

    #[test]
    fn maps_every_route_and_method_to_its_action() {
        let pull = |n| Need::Scope(Scope::Repository(name(n), Actions::PULL));
        let write = |n| {
            Need::Scope(Scope::Repository(
                name(n),
                Actions::PULL.union(Actions::PUSH),
            ))
        };
        let delete = |n| Need::Scope(Scope::Repository(name(n), Actions::DELETE));
        assert_eq!(need(Method::GET, "/v2/"), Need::Authenticated);
        assert_eq!(
            need(Method::GET, "/v2/_catalog"),
            Need::Scope(Scope::Catalog)
        );
        assert_eq!(need(Method::GET, "/v2/a/manifests/v1"), pull("a"));
        assert_eq!(
            need(Method::HEAD, &format!("/v2/a/b/blobs/{D}")),
            pull("a/b")
        );
        assert_eq!(need(Method::GET, "/v2/a/tags/list"), pull("a"));
        assert_eq!(
            need(Method::GET, &format!("/v2/a/referrers/{D}")),
            pull("a")
        );
        assert_eq!(need(Method::PUT, "/v2/a/manifests/v1"), write("a"));
        assert_eq!(need(Method::POST, "/v2/a/blobs/uploads/"), write("a"));
        assert_eq!(need(Method::PATCH, "/v2/a/blobs/uploads/x"), write("a"));
        assert_eq!(need(Method::PUT, "/v2/a/blobs/uploads/x"), write("a"));
        assert_eq!(need(Method::GET, "/v2/a/blobs/uploads/x"), write("a"));
        assert_eq!(need(Method::DELETE, "/v2/a/blobs/uploads/x"), write("a"));
        assert_eq!(need(Method::DELETE, "/v2/a/manifests/v1"), delete("a"));
        assert_eq!(
            need(Method::DELETE, &format!("/v2/a/blobs/{D}")),
            delete("a")
        );
        // Paths outside the API, and API paths that do not parse, need credentials.
        assert_eq!(need(Method::GET, "/v2/a/unknown/x"), Need::Authenticated);
        assert_eq!(need(Method::GET, "/v2/A/manifests/v1"), Need::Authenticated);
        assert_eq!(need(Method::GET, "/admin"), Need::Authenticated);
    }

    #[test]
    fn a_mount_names_its_source_only_on_post() {
        let start = route::parse("/v2/dst/blobs/uploads/").unwrap().unwrap();
        let r = required(&Method::POST, Some(&start), Some("src/app"));
        assert_eq!(r.mount_from, Some(name("src/app")));
        let scopes: Vec<String> = r
            .challenge_scopes()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            scopes,
            ["repository:dst:pull,push", "repository:src/app:pull"]
        );
        assert_eq!(
            required(&Method::POST, Some(&start), Some("Not A Name")).mount_from,
            None
        );
        let manifest = route::parse("/v2/dst/manifests/v1").unwrap().unwrap();
        assert_eq!(
            required(&Method::PUT, Some(&manifest), Some("src")).mount_from,
            None
        );
    }

    #[test]
    fn action_sets() {
        let pp = Actions::parse_list("pull, push,bogus");
        assert_eq!(pp, Actions::PULL.union(Actions::PUSH));
        assert!(Actions::ALL.contains(pp));
        assert!(!pp.contains(Actions::DELETE));
        assert_eq!(pp.intersect(Actions::PULL), Actions::PULL);
        assert_eq!(Actions::ALL.to_string(), "pull,push,delete");
        assert!(Actions::parse_list("").is_empty());
    }
}
