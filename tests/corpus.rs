//! The workload corpus (scripts/corpus/): real Debian programs run natively,
//! in 1 variant and in 2 variants, compared on stdout, exit status and the
//! files they write. The fast subset must pass, apart from the reviewed
//! known failures of scripts/corpus/known.toml, and those must still fail
//! exactly as listed (a fix makes this test ask for the entry's removal).
//! The runner installs the Debian packages it needs (apt-get) and mounts
//! overlay scratch roots, so these tests need root as well as KVM.

use dmvx::*;
use std::path::{Path, PathBuf};

/// Runs the corpus runner with `extra` arguments; returns its output and
/// the parsed results.
fn corpus(out: &Path, extra: &[&str]) -> (String, serde_json::Value) {
    let script = workspace().join("scripts/corpus/corpus.py");
    let json = out.join("results.json");
    let _ = std::fs::remove_file(&json);
    let vmm = vmm();
    let mut args = vec![
        script.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--vmm",
        vmm.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = run("python3", &args, b"");
    let text = format!("{}{}", stdout(&o), stderr(&o));
    assert_ne!(status(&o), 2, "the corpus runner could not set up:\n{text}");
    let results = std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("{}: {e}\n{text}", json.display()));
    (text, serde_json::from_str(&results).expect("results.json is JSON"))
}

/// Case names whose outcome is `outcome`.
fn with_outcome(v: &serde_json::Value, outcome: &str) -> Vec<String> {
    v["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["outcome"] == outcome)
        .map(|r| r["name"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn out_dir(name: &str) -> PathBuf {
    target_dir().join(name)
}

#[test]
fn fast_corpus_is_native_or_known() {
    require_kvm!();
    require_root!();
    let (text, v) = corpus(&out_dir("corpus-fast"), &["--fast"]);
    let ran = v["results"].as_array().expect("results").iter().filter(|r| r["outcome"] != "skipped").count();
    assert!(ran >= 40, "only {ran} cases of the fast subset ran:\n{text}");
    let unexpected = with_outcome(&v, "unexpected failure");
    assert!(
        unexpected.is_empty(),
        "cases that newly fail (fix them or review scripts/corpus/known.toml): {unexpected:?}\n{text}"
    );
    let broken = with_outcome(&v, "broken");
    assert!(broken.is_empty(), "cases whose native run fails (the case itself is wrong): {broken:?}\n{text}");
    let fixed = with_outcome(&v, "now passes");
    assert!(
        fixed.is_empty(),
        "known failures that now pass: remove (or narrow) their entries in scripts/corpus/known.toml: {fixed:?}\n{text}"
    );
    let failed = v["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["failing"].as_array().is_some_and(|f| !f.is_empty()))
        .count();
    assert!(text.contains(&format!("{} passed, {failed} failed", ran - failed)), "summary line:\n{text}");
}

/// The runner itself: a case that differs from native and is not listed is
/// reported, and so is a listed failure that passes.
#[test]
fn corpus_runner_reports_new_failures_and_new_passes() {
    require_kvm!();
    require_root!();
    let dir = TempDir::new("corpus-self");
    let cases = dir.join("cases.toml");
    let known = dir.join("known.toml");
    std::fs::write(
        &cases,
        concat!(
            "[[case]]\nname = \"passes\"\ncmd = [\"printf\", \"%s\\\\n\", \"same everywhere\"]\n\n",
            // The VM's host name is dmvx's own: differs from native.
            "[[case]]\nname = \"differs\"\ncmd = [\"uname\", \"-n\"]\n\n",
            "[[case]]\nname = \"listed\"\ncmd = [\"uname\", \"-n\"]\n\n",
            "[[case]]\nname = \"scratch-writes\"\ncmd = [\"cp\", \"a\", \"b\"]\nroot = \"scratch\"\n",
            "setup = \"echo x > a\"\nfiles = [\"*\"]\n",
        ),
    )
    .unwrap();
    std::fs::write(
        &known,
        concat!(
            "[[known]]\ncase = \"passes\"\nmodes = [\"1\"]\nclass = \"b\"\nissue = 13\nreason = \"listed on purpose\"\n\n",
            "[[known]]\ncase = \"listed\"\nmodes = [\"1\"]\nclass = \"b\"\nissue = 13\nreason = \"a virtual host name\"\n",
        ),
    )
    .unwrap();
    let (text, v) = corpus(
        &out_dir("corpus-self"),
        &["--cases", cases.to_str().unwrap(), "--known", known.to_str().unwrap(), "--modes", "1", "--no-install"],
    );
    assert_eq!(with_outcome(&v, "now passes"), ["passes"], "{text}");
    assert_eq!(with_outcome(&v, "unexpected failure"), ["differs"], "{text}");
    assert_eq!(with_outcome(&v, "known failure"), ["listed"], "{text}");
    assert_eq!(with_outcome(&v, "pass"), ["scratch-writes"], "{text}");
    assert!(text.contains("2 passed, 2 failed"), "{text}");
}

/// docs/workloads.md is the last full run of the current corpus: a row for
/// every case, and a reason for every failure.
#[test]
fn workloads_doc_covers_every_case() {
    let cases = std::fs::read_to_string(workspace().join("scripts/corpus/cases.toml")).expect("cases.toml");
    let doc = std::fs::read_to_string(workspace().join("docs/workloads.md")).expect("docs/workloads.md");
    let names: Vec<&str> = cases
        .split("[[case]]")
        .skip(1)
        .filter_map(|c| c.lines().find_map(|l| l.strip_prefix("name = \"")?.strip_suffix('"')))
        .collect();
    assert!(names.len() >= 100, "only {} cases in scripts/corpus/cases.toml", names.len());
    let missing: Vec<&&str> = names.iter().filter(|n| !doc.contains(&format!("\n| {n} |"))).collect();
    assert!(
        missing.is_empty(),
        "docs/workloads.md lacks {missing:?}: run scripts/corpus/corpus.py --markdown docs/workloads.md"
    );
    assert!(
        !doc.contains("UNEXPLAINED"),
        "docs/workloads.md has a failure without a reason in scripts/corpus/known.toml"
    );
}
