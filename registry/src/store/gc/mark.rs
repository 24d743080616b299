//! The mark phase: a snapshot of every repository's links, the references of every manifest,
//! the live set of each repository, and the plan of what the sweep may delete.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::GcReport;
use crate::backing::{Backing, read_capped};
use crate::digest::{Digest, Digester};
use crate::manifest::{MAX_MANIFEST_BYTES, Manifest, ManifestKind};
use crate::name::RepoName;
use crate::store::LocalStore;
use crate::store::manifests::{list_names, walk_repos};

/// What a manifest points at.
#[derive(Clone, Debug, Default)]
pub(super) struct Refs {
    /// Child manifests (an index's `manifests`).
    pub children: Vec<Digest>,
    /// Config and layers.
    pub blobs: Vec<Digest>,
    /// The manifest it refers to, for the referrers API.
    pub subject: Option<Digest>,
}

impl Refs {
    fn of(m: &Manifest) -> Refs {
        let (children, blobs) = match &m.kind {
            ManifestKind::Index { .. } => (m.references().cloned().collect(), Vec::new()),
            ManifestKind::Image { .. } => (Vec::new(), m.references().cloned().collect()),
        };
        Refs {
            children,
            blobs,
            subject: m.subject.as_ref().map(|s| s.digest.clone()),
        }
    }
}

/// What the sweep may remove for one digest.
#[derive(Debug, Default)]
pub(super) struct Step {
    /// Revision links of repositories where the manifest is dead.
    pub revisions: Vec<(RepoName, PathBuf)>,
    /// `_layers` links of repositories where the blob is dead.
    pub layers: Vec<(RepoName, PathBuf)>,
    /// Referrer entries naming the manifest.
    pub referrers: Vec<PathBuf>,
    /// Whether the blob file goes too: no link is left and no live manifest names it.
    pub file: bool,
}

/// The mark's outcome.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// Manifests first, then the other blobs: a manifest that survived its blobs could be
    /// tagged again (its existence check passes) while pointing at nothing.
    pub steps: Vec<(Digest, Step)>,
    /// The references of every manifest read, to close over what writes name.
    pub refs: HashMap<Digest, Refs>,
    /// Every repository, for the backing deletes of blobs that no repository links.
    pub repos: Vec<RepoName>,
    /// Why the live set may be short (a live manifest could not be read), if it may.
    pub incomplete: Option<String>,
    /// Stored manifests whose files do not parse.
    unreadable: HashSet<Digest>,
    /// The marks of clients' deletes (`_deleted/`), by digest: dropped once the collector
    /// deleted that content from the backing for their repository (nothing is left to fetch
    /// back).
    pub deleted_marks: HashMap<Digest, Vec<(RepoName, PathBuf)>>,
}

/// A link file and its age.
#[derive(Debug)]
struct Link {
    path: PathBuf,
    modified: SystemTime,
}

#[derive(Debug)]
struct RepoSnapshot {
    name: RepoName,
    tags: Vec<Digest>,
    /// A tag file that does not hold a digest: what it meant to keep is unknown.
    unreadable_tag: bool,
    /// Revision links, with the media type each holds.
    revisions: BTreeMap<Digest, (Link, String)>,
    layers: BTreeMap<Digest, Link>,
    /// Referrer entries by the referrer's digest.
    referrers: Vec<(Digest, Link)>,
    /// Marks of content a client deleted from the repository.
    deleted_marks: Vec<(Digest, PathBuf)>,
}

#[derive(Debug, Default)]
struct Snapshot {
    repos: Vec<RepoSnapshot>,
    /// Every blob file and its modification time.
    blobs: HashMap<Digest, SystemTime>,
}

/// Marks the store; content modified after `cutoff` is young.
pub(super) async fn mark(
    store: &LocalStore,
    cutoff: SystemTime,
    backing: Option<&dyn Backing>,
    report: &mut GcReport,
) -> io::Result<Plan> {
    let root = store.root.clone();
    let (snapshot, (refs, unreadable)) = {
        let root = root.clone();
        tokio::task::spawn_blocking(move || {
            let snapshot = read_snapshot(&root)?;
            let refs = read_manifests(&root, &snapshot);
            Ok::<_, io::Error>((snapshot, refs))
        })
        .await
        .map_err(io::Error::other)??
    };
    let mut plan = Plan {
        refs,
        unreadable,
        repos: snapshot.repos.iter().map(|r| r.name.clone()).collect(),
        ..Plan::default()
    };
    report.repositories = snapshot.repos.len();
    for repo in &snapshot.repos {
        for (d, path) in &repo.deleted_marks {
            plan.deleted_marks
                .entry(d.clone())
                .or_default()
                .push((repo.name.clone(), path.clone()));
        }
    }
    let young = |t: SystemTime| t > cutoff;

    // Live content per repository, and everything any live manifest names.
    let mut live = Vec::with_capacity(snapshot.repos.len());
    let mut live_anywhere: HashSet<Digest> = HashSet::new();
    for repo in &snapshot.repos {
        let (manifests, blobs, complete) =
            mark_repo(&root, repo, &young, &mut plan, backing, report).await;
        if !complete && plan.incomplete.is_none() {
            plan.incomplete = Some(format!(
                "a live manifest of repository {} could not be read",
                repo.name
            ));
        }
        live_anywhere.extend(manifests.iter().cloned());
        live_anywhere.extend(blobs.iter().cloned());
        live.push((manifests, blobs, complete));
    }

    // Dead links, grouped by digest; and how many links each digest has in all.
    let mut steps: BTreeMap<Digest, Step> = BTreeMap::new();
    let mut links: HashMap<&Digest, usize> = HashMap::new();
    for (repo, (manifests, blobs, complete)) in snapshot.repos.iter().zip(&live) {
        for (d, (link, _)) in &repo.revisions {
            *links.entry(d).or_default() += 1;
            if manifests.contains(d) {
                continue;
            }
            // Young revisions are roots, so a dead one is old.
            let step = steps.entry(d.clone()).or_default();
            step.revisions.push((repo.name.clone(), link.path.clone()));
        }
        for (d, link) in &repo.layers {
            *links.entry(d).or_default() += 1;
            if blobs.contains(d) || manifests.contains(d) || !complete || repo.unreadable_tag {
                continue;
            }
            if young(link.modified) {
                report.kept_young += 1;
                continue;
            }
            let step = steps.entry(d.clone()).or_default();
            step.layers.push((repo.name.clone(), link.path.clone()));
        }
        for (referrer, link) in &repo.referrers {
            if manifests.contains(referrer) {
                continue;
            }
            if young(link.modified) {
                report.kept_young += 1;
                continue;
            }
            let step = steps.entry(referrer.clone()).or_default();
            step.referrers.push(link.path.clone());
        }
    }

    // Blob files no link will name after the sweep and no live manifest names.
    for (d, modified) in &snapshot.blobs {
        if live_anywhere.contains(d) {
            continue;
        }
        let linked = links.get(d).copied().unwrap_or(0);
        let unlinked = steps
            .get(d)
            .map_or(0, |s| s.revisions.len() + s.layers.len());
        if linked != unlinked {
            continue;
        }
        if young(*modified) {
            report.kept_young += 1;
            continue;
        }
        steps.entry(d.clone()).or_default().file = true;
    }

    let (manifests, blobs): (Vec<_>, Vec<_>) = steps
        .into_iter()
        .partition(|(d, s)| !s.revisions.is_empty() || plan.refs.contains_key(d));
    plan.steps = manifests.into_iter().chain(blobs).collect();
    Ok(plan)
}

/// The live manifests and blobs of one repository, and whether every live manifest could be
/// read (when one could not, what it references is unknown).
async fn mark_repo(
    root: &Path,
    repo: &RepoSnapshot,
    young: &impl Fn(SystemTime) -> bool,
    plan: &mut Plan,
    backing: Option<&dyn Backing>,
    report: &mut GcReport,
) -> (HashSet<Digest>, HashSet<Digest>, bool) {
    let mut referrers_of: HashMap<Digest, Vec<Digest>> = HashMap::new();
    for d in repo.revisions.keys() {
        if let Some(subject) = plan.refs.get(d).and_then(|r| r.subject.clone()) {
            referrers_of.entry(subject).or_default().push(d.clone());
        }
    }
    // Tags first, then young manifests, to count those that only their age keeps.
    let mut queue: Vec<Digest> = repo.tags.clone();
    let mut young_roots: Vec<Digest> = repo
        .revisions
        .iter()
        .filter(|(_, (link, _))| young(link.modified))
        .map(|(d, _)| d.clone())
        .collect();
    let mut manifests = HashSet::new();
    let mut blobs = HashSet::new();
    let mut complete = true;
    loop {
        let Some(d) = queue.pop() else {
            let Some(root) = young_roots.pop() else {
                break;
            };
            if !manifests.contains(&root) {
                report.kept_young += 1;
                queue.push(root);
            }
            continue;
        };
        if !manifests.insert(d.clone()) {
            continue;
        }
        if !plan.refs.contains_key(&d) {
            match find_refs(root, backing, &repo.name, &d, &plan.unreadable).await {
                Found::Refs(refs) => {
                    plan.refs.insert(d.clone(), refs);
                }
                Found::Nowhere => continue,
                Found::Unknown => {
                    tracing::warn!(repo = %repo.name, digest = %d,
                        "gc: a live manifest could not be read; keeping every blob of its \
                         repository");
                    complete = false;
                    continue;
                }
            }
        }
        let refs = &plan.refs[&d];
        queue.extend(refs.children.iter().cloned());
        blobs.extend(refs.blobs.iter().cloned());
        if let Some(referrers) = referrers_of.get(&d) {
            queue.extend(referrers.iter().cloned());
        }
    }
    (manifests, blobs, complete)
}

/// What is known of a live manifest that no revision link led the mark to.
enum Found {
    Refs(Refs),
    /// Neither the store nor the backing holds it: it references nothing that exists.
    Nowhere,
    /// It exists but could not be read or parsed: what it references is unknown.
    Unknown,
}

/// A live manifest's references from the store's blob file, else from the backing.
async fn find_refs(
    root: &Path,
    backing: Option<&dyn Backing>,
    repo: &RepoName,
    d: &Digest,
    unreadable: &HashSet<Digest>,
) -> Found {
    if unreadable.contains(d) {
        return Found::Unknown;
    }
    let parse = |bytes: &[u8]| {
        let mut h = Digester::new(d.algorithm());
        h.update(bytes);
        match Manifest::parse(bytes, None) {
            Ok(m) if h.current() == *d => Found::Refs(Refs::of(&m)),
            _ => Found::Unknown,
        }
    };
    let path = blob_file(root, d);
    match tokio::fs::metadata(&path).await {
        Ok(m) if m.len() > MAX_MANIFEST_BYTES as u64 => return Found::Unknown,
        Ok(_) => {
            return match tokio::fs::read(&path).await {
                Ok(bytes) => parse(&bytes),
                Err(_) => Found::Unknown,
            };
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(_) => return Found::Unknown,
    }
    let Some(backing) = backing else {
        return Found::Nowhere;
    };
    match backing.get_blob(repo, d).await {
        Ok(Some(body)) => match read_capped(body, MAX_MANIFEST_BYTES).await {
            Ok(bytes) => parse(&bytes),
            Err(_) => Found::Unknown,
        },
        Ok(None) => Found::Nowhere,
        Err(e) => {
            tracing::warn!(%repo, digest = %d, error = %e.message,
                "gc: reading a live manifest from the backing failed");
            Found::Unknown
        }
    }
}

/// Where blob `d`'s file lives under the store's `root`.
fn blob_file(root: &Path, d: &Digest) -> PathBuf {
    root.join("blobs")
        .join(d.algorithm().as_str())
        .join(&d.hex()[..2])
        .join(d.hex())
}

/// Reads every repository's links and every blob file's age.
fn read_snapshot(root: &Path) -> io::Result<Snapshot> {
    let mut names = Vec::new();
    walk_repos(&root.join("repositories"), String::new(), &mut names)?;
    names.sort();
    let mut snapshot = Snapshot::default();
    for name in names {
        let Ok(repo) = name.parse::<RepoName>() else {
            tracing::warn!(%name, "gc: skipping a repository folder whose name is not valid");
            continue;
        };
        let dir = root.join("repositories").join(&name);
        let mut tags = Vec::new();
        let mut unreadable_tag = false;
        let tags_dir = dir.join("_manifests/tags");
        for tag in list_names(&tags_dir)? {
            let Some(raw) = read_small(&tags_dir.join(&tag))? else {
                continue;
            };
            match String::from_utf8_lossy(&raw).trim().parse::<Digest>() {
                Ok(d) => tags.push(d),
                Err(e) => {
                    tracing::warn!(%repo, %tag, %e, "gc: tag file does not hold a digest; keeping the repository's blobs");
                    unreadable_tag = true;
                }
            }
        }
        let mut revisions = BTreeMap::new();
        for (d, link) in digest_links(&dir.join("_manifests/revisions"))? {
            let media = read_small(&link.path)?
                .map(|m| String::from_utf8_lossy(&m).into_owned())
                .unwrap_or_default();
            revisions.insert(d, (link, media));
        }
        let layers = digest_links(&dir.join("_layers"))?.into_iter().collect();
        let mut referrers = Vec::new();
        let referrers_dir = dir.join("_referrers");
        for (_, subject_dir) in digest_dirs(&referrers_dir)? {
            for entry in list_names(&subject_dir)? {
                let Some(referrer) = entry
                    .split_once('-')
                    .and_then(|(alg, hex)| format!("{alg}:{hex}").parse::<Digest>().ok())
                else {
                    continue;
                };
                if let Some(link) = link_at(subject_dir.join(&entry))? {
                    referrers.push((referrer, link));
                }
            }
        }
        let deleted_marks = digest_dirs(&dir.join("_deleted"))?;
        snapshot.repos.push(RepoSnapshot {
            name: repo,
            tags,
            unreadable_tag,
            revisions,
            layers,
            referrers,
            deleted_marks,
        });
    }
    for (d, dir) in digest_dirs_sharded(&root.join("blobs"))? {
        if let Some(link) = link_at(dir)? {
            snapshot.blobs.insert(d, link.modified);
        }
    }
    Ok(snapshot)
}

/// The references of every manifest some repository holds, read from the blob files, and
/// the manifests whose files do not parse (what they reference is unknown).
fn read_manifests(root: &Path, snapshot: &Snapshot) -> (HashMap<Digest, Refs>, HashSet<Digest>) {
    let mut refs = HashMap::new();
    let mut unreadable = HashSet::new();
    for repo in &snapshot.repos {
        for (d, (_, media)) in &repo.revisions {
            if refs.contains_key(d) {
                continue;
            }
            let path = blob_file(root, d);
            let bytes = match std::fs::metadata(&path) {
                Ok(m) if m.len() <= MAX_MANIFEST_BYTES as u64 => std::fs::read(&path).ok(),
                _ => None,
            };
            let media = Some(media.as_str()).filter(|m| !m.is_empty());
            match bytes.map(|b| Manifest::parse(&b, media)) {
                Some(Ok(m)) => {
                    refs.insert(d.clone(), Refs::of(&m));
                }
                Some(Err(e)) => {
                    tracing::warn!(repo = %repo.name, digest = %d, error = %e.message,
                        "gc: a stored manifest does not parse");
                    unreadable.insert(d.clone());
                }
                // Gone, or too large to be one: the backing may have it.
                None => {}
            }
        }
    }
    (refs, unreadable)
}

/// `<dir>/<alg>/<hex>` files as digests.
fn digest_links(dir: &Path) -> io::Result<Vec<(Digest, Link)>> {
    let mut out = Vec::new();
    for (d, path) in digest_dirs(dir)? {
        if let Some(link) = link_at(path)? {
            out.push((d, link));
        }
    }
    Ok(out)
}

/// `<dir>/<alg>/<hex>` entries as digests and paths.
fn digest_dirs(dir: &Path) -> io::Result<Vec<(Digest, PathBuf)>> {
    let mut out = Vec::new();
    for alg in list_names(dir)? {
        for hex in list_names(&dir.join(&alg))? {
            if let Ok(d) = format!("{alg}:{hex}").parse::<Digest>() {
                out.push((d, dir.join(&alg).join(&hex)));
            }
        }
    }
    Ok(out)
}

/// `<dir>/<alg>/<hex[..2]>/<hex>` entries (the blob files) as digests and paths.
fn digest_dirs_sharded(dir: &Path) -> io::Result<Vec<(Digest, PathBuf)>> {
    let mut out = Vec::new();
    for alg in list_names(dir)? {
        for shard in list_names(&dir.join(&alg))? {
            for hex in list_names(&dir.join(&alg).join(&shard))? {
                if let Ok(d) = format!("{alg}:{hex}").parse::<Digest>() {
                    out.push((d, dir.join(&alg).join(&shard).join(&hex)));
                }
            }
        }
    }
    Ok(out)
}

/// A file's age, `None` when it went away since it was listed.
fn link_at(path: PathBuf) -> io::Result<Option<Link>> {
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => Ok(Some(Link {
            modified: m.modified()?,
            path,
        })),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A small file's bytes, `None` when it does not exist.
fn read_small(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
