//! Bundles packed by the archive tools people use: GNU tar (with and
//! without the `./` prefix, in a top folder, formats gnu, posix, ustar and
//! v7), bsdtar, `git archive` (its pax global header), Python's `tarfile`
//! (GNU, PAX with global and per-file headers, USTAR), and the gzip variants
//! (levels 1 and 9, several members, `.tar.gz`, `.tgz`, plain `.tar`). Each
//! is checked by the real binary (`triad bundle verify`, golden cases
//! included) and a few go through the node's deploy path. Hostile archives
//! made with the same tools (links, `..` and absolute names, a path hidden
//! in a pax header, devices, duplicates, too many entries, a gzip bomb) are
//! still refused, by name.

mod model_swap_util;

use model_swap_util::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use triad_edge::models::bundle::Bundle;
use triad_edge::trust::keys::{self, SigningKey};
use triad_tests::{TempDir, python, triad};

/// A signed weld bundle of `version` written to `dir/weld-<version>`, and
/// the public key file that verifies it.
struct Shipped {
    dir: PathBuf,
    public: PathBuf,
    digest: String,
}

fn ship(root: &Path, version: &str, key: &SigningKey) -> Shipped {
    let b = weld_bundle(version, key);
    let dir = root.join(format!("weld-{version}"));
    b.write_dir(&dir).unwrap();
    let public = root.join(format!("{}.pub", key.name()));
    std::fs::write(&public, keys::public_pem(key.public())).unwrap();
    Shipped {
        dir,
        public,
        digest: digest(&b),
    }
}

/// Run `script` with sh; `B` is the bundle folder, `O` the archive, `W` a
/// scratch folder.
fn sh(script: &str, b: &Path, o: &Path, w: &Path) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("B", b)
        .env("O", o)
        .env("W", w)
        .env("PY", python())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Python's tarfile: `tarfile.open(O, MODE, format=FORMAT, pax_headers=GLOBAL)`
/// with the bundle folder added as ARCNAME; FILE_PAX (JSON) is given to every
/// file as its own pax header.
const PY_TAR: &str = r#"
import json, os, sys, tarfile
mode, fmt, arcname, global_pax, file_pax = sys.argv[1:6]
kw = {"format": getattr(tarfile, fmt)}
if global_pax != "-":
    kw["pax_headers"] = json.loads(global_pax)
def extra(ti):
    if file_pax != "-" and ti.isfile():
        ti.pax_headers = json.loads(file_pax)
    return ti
with tarfile.open(os.environ["O"], mode, **kw) as t:
    t.add(os.environ["B"], arcname=arcname, filter=extra)
"#;

fn py_tar(mode: &str, format: &str, arcname: &str, global_pax: &str, file_pax: &str) -> String {
    format!(
        "\"$PY\" -c '{}' {mode} {format} {arcname} '{global_pax}' '{file_pax}'",
        PY_TAR.replace('\'', "\"")
    )
}

/// (name, archive file name, script).
fn packers() -> Vec<(&'static str, &'static str, String)> {
    let mut v: Vec<(&'static str, &'static str, String)> = vec![
        // The tried case: `./` and `./golden/` directory entries.
        ("gnu tar, ./ prefix", "b.tar.gz", r#"tar -C "$B" -czf "$O" ."#.into()),
        (
            "gnu tar, named files",
            "b.tgz",
            r#"cd "$B" && tar -czf "$O" manifest.json signature.json model.onnx golden"#.into(),
        ),
        (
            "gnu tar, one top folder",
            "b.tar.gz",
            r#"tar -C "$(dirname "$B")" -czf "$O" "$(basename "$B")""#.into(),
        ),
        ("gnu tar --format=gnu", "b.tgz", r#"tar --format=gnu -C "$B" -czf "$O" ."#.into()),
        // pax headers with atime and ctime before every entry.
        ("gnu tar --format=posix", "b.tar.gz", r#"tar --format=posix -C "$B" -czf "$O" ."#.into()),
        ("gnu tar --format=ustar, plain", "b.tar", r#"tar --format=ustar -C "$B" -cf "$O" ."#.into()),
        ("gnu tar --format=v7, plain", "b.tar", r#"tar --format=v7 -C "$B" -cf "$O" ."#.into()),
        ("gzip -1", "b.tar.gz", r#"tar -C "$B" -cf - . | gzip -1 > "$O""#.into()),
        ("gzip -9 -n", "b.tgz", r#"tar -C "$B" -cf - . | gzip -9 -n > "$O""#.into()),
        (
            "two gzip members",
            "b.tar.gz",
            r#"tar -C "$B" -cf "$W/t.tar" . && head -c 10240 "$W/t.tar" | gzip > "$O" && tail -c +10241 "$W/t.tar" | gzip >> "$O""#
                .into(),
        ),
        (
            "git archive tar.gz",
            "b.tar.gz",
            r#"cp -r "$B" "$W/repo" && cd "$W/repo" && git init -q && git add -A && git -c user.name=t -c user.email=t@example.com commit -qm bundle && git archive --format=tar.gz -o "$O" HEAD"#
                .into(),
        ),
        (
            "git archive --prefix, tar",
            "b.tar",
            r#"cp -r "$B" "$W/repo" && cd "$W/repo" && git init -q && git add -A && git -c user.name=t -c user.email=t@example.com commit -qm bundle && git archive --format=tar --prefix=weld-1.1.0/ -o "$O" HEAD"#
                .into(),
        ),
        ("python tarfile GNU", "b.tar.gz", py_tar("w:gz", "GNU_FORMAT", ".", "-", "-")),
        ("python tarfile USTAR, plain", "b.tar", py_tar("w", "USTAR_FORMAT", ".", "-", "-")),
        ("python tarfile PAX", "b.tgz", py_tar("w:gz", "PAX_FORMAT", "weld", "-", "-")),
        (
            "python tarfile PAX, global and per-file headers",
            "b.tar.gz",
            py_tar(
                "w:gz",
                "PAX_FORMAT",
                ".",
                r#"{"comment": "global"}"#,
                r#"{"comment": "per file", "mtime": "1.5"}"#,
            ),
        ),
    ];
    if bsdtar().is_some() {
        v.extend([
            ("bsdtar", "b.tar.gz", r#"bsdtar -C "$B" -czf "$O" ."#.to_string()),
            (
                "bsdtar --format=pax",
                "b.tgz",
                r#"bsdtar --format=pax -C "$B" -czf "$O" ."#.into(),
            ),
            (
                "bsdtar --format=ustar",
                "b.tar",
                r#"bsdtar --format=ustar -C "$B" -cf "$O" ."#.into(),
            ),
            (
                "bsdtar --format=gnutar",
                "b.tar.gz",
                r#"bsdtar --format=gnutar -C "$B" -czf "$O" ."#.into(),
            ),
        ]);
    }
    v
}

fn bsdtar() -> Option<PathBuf> {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("bsdtar"))
        .find(|p| p.exists());
    if found.is_none() {
        println!("bsdtar is not installed (apt-get install libarchive-tools): its archives are not tested");
    }
    found
}

fn verify(archive: &Path, public: &Path) -> std::process::Output {
    triad(
        &[
            "bundle",
            "verify",
            archive.to_str().unwrap(),
            "--trust",
            public.to_str().unwrap(),
        ],
        &[],
    )
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn archives_of_the_standard_tools_verify_with_the_binary() {
    let root = TempDir::new("ba-verify");
    let key = SigningKey::generate("release-2025").unwrap().0;
    let shipped = ship(root.path(), "1.1.0", &key);
    for (i, (name, file, script)) in packers().into_iter().enumerate() {
        let work = root.path().join(format!("w{i}"));
        std::fs::create_dir_all(&work).unwrap();
        let archive = work.join(file);
        sh(&script, &shipped.dir, &archive, &work);
        let o = verify(&archive, &shipped.public);
        assert!(o.status.success(), "{name}: refused:\n{}", text(&o));
        let out = text(&o);
        assert!(
            out.contains("4 golden case(s) pass") && out.contains(&shipped.digest),
            "{name}: {out}"
        );
        // The archive reads as the very files of the folder.
        let from_archive = Bundle::from_path(&archive, Default::default()).unwrap();
        let from_dir = Bundle::from_dir(&shipped.dir, Default::default()).unwrap();
        assert_eq!(from_archive, from_dir, "{name}");
    }
}

#[test]
fn archives_of_the_standard_tools_deploy_through_the_node() {
    let rig = Rig::new("ba-deploy");
    let root = TempDir::new("ba-deploy-files");
    let mut chosen: Vec<(&str, String)> = vec![
        ("gnu tar, ./ prefix", r#"tar -C "$B" -czf "$O" ."#.into()),
        (
            "git archive",
            r#"cp -r "$B" "$W/repo" && cd "$W/repo" && git init -q && git add -A && git -c user.name=t -c user.email=t@example.com commit -qm bundle && git archive --format=tar.gz -o "$O" HEAD"#
                .into(),
        ),
        (
            "python tarfile PAX with headers",
            py_tar("w:gz", "PAX_FORMAT", ".", r#"{"comment": "g"}"#, r#"{"comment": "f"}"#),
        ),
        (
            "two gzip members",
            r#"tar -C "$B" -cf "$W/t.tar" . && head -c 10240 "$W/t.tar" | gzip > "$O" && tail -c +10241 "$W/t.tar" | gzip >> "$O""#
                .into(),
        ),
    ];
    if bsdtar().is_some() {
        chosen.push(("bsdtar", r#"bsdtar -C "$B" -czf "$O" ."#.into()));
    }
    let mut generation = 1;
    for (i, (name, script)) in chosen.into_iter().enumerate() {
        let version = format!("1.{}.0", i + 1);
        let shipped = ship(root.path(), &version, &rig.keys.release);
        let work = root.path().join(format!("w{i}"));
        std::fs::create_dir_all(&work).unwrap();
        let archive = work.join("b.tar.gz");
        sh(&script, &shipped.dir, &archive, &work);
        let b = Bundle::from_dir(&shipped.dir, Default::default()).unwrap();
        let tok = rig.token(&deploy_claims(&b));
        let rep = rig
            .deploy_archive(std::fs::read(&archive).unwrap(), &tok)
            .unwrap_or_else(|e| panic!("{name}: refused ({}): {e}", e.code()));
        generation += 1;
        assert_eq!(rig.running(), (version.clone(), generation), "{name}: {rep:?}");
    }
}

/// Build a hostile archive with `script` and expect `bundle verify` to refuse
/// it naming `needle`.
fn refused(root: &Path, shipped: &Shipped, name: &str, script: &str, needle: &str) {
    let work = root.join(name.replace(' ', "_"));
    std::fs::create_dir_all(&work).unwrap();
    let archive = work.join("b.tar.gz");
    sh(script, &shipped.dir, &archive, &work);
    let o = verify(&archive, &shipped.public);
    assert_eq!(o.status.code(), Some(3), "{name}: not refused:\n{}", text(&o));
    assert!(
        text(&o).contains(needle),
        "{name}: reason does not name {needle:?}:\n{}",
        text(&o)
    );
}

/// Python: add the bundle, then one hostile member made by SNIPPET (which
/// sees `t`, the open tarfile, and `tarfile`).
fn py_hostile(snippet: &str) -> String {
    let code = format!(
        "import io, os, tarfile\nwith tarfile.open(os.environ[\"O\"], \"w:gz\", format=tarfile.PAX_FORMAT) as t:\n    t.add(os.environ[\"B\"], arcname=\".\")\n    {snippet}\n"
    );
    format!("\"$PY\" -c '{}'", code.replace('\'', "\""))
}

#[test]
fn hostile_archives_made_by_the_same_tools_are_still_refused() {
    let root = TempDir::new("ba-hostile");
    let key = SigningKey::generate("release-2025").unwrap().0;
    let shipped = ship(root.path(), "1.1.0", &key);
    let r = root.path();
    refused(
        r,
        &shipped,
        "gnu tar symlink",
        r#"cp -r "$B" "$W/d" && ln -s model.onnx "$W/d/golden/link" && tar -C "$W/d" -czf "$O" ."#,
        "symbolic link",
    );
    refused(
        r,
        &shipped,
        "gnu tar hard link",
        r#"cp -r "$B" "$W/d" && ln "$W/d/model.onnx" "$W/d/model2.onnx" && tar -C "$W/d" -czf "$O" ."#,
        "hard link",
    );
    refused(
        r,
        &shipped,
        "gnu tar dotdot",
        r#"cp -r "$B" "$W/d" && echo x > "$W/evil" && cd "$W/d" && tar -czf "$O" -P . ../evil"#,
        "\"../evil\" is refused: it climbs out of the bundle",
    );
    refused(
        r,
        &shipped,
        "gnu tar absolute",
        r#"echo x > "$W/evil" && tar -C "$B" -czf "$O" -P . "$W/evil""#,
        "is refused: it is absolute",
    );
    refused(
        r,
        &shipped,
        "gnu tar duplicate",
        r#"tar -C "$B" -cf "$W/t.tar" . && tar -C "$B" -rf "$W/t.tar" ./model.onnx && gzip -c "$W/t.tar" > "$O""#,
        "\"model.onnx\" appears twice",
    );
    refused(
        r,
        &shipped,
        "python pax path",
        &py_hostile(
            "ti = tarfile.TarInfo(\"ok.bin\"); ti.size = 1; ti.pax_headers = {\"path\": \"../../evil\"}; t.addfile(ti, io.BytesIO(b\"x\"))",
        ),
        "\"../../evil\" is refused: it climbs out of the bundle",
    );
    refused(
        r,
        &shipped,
        "python device",
        &py_hostile("ti = tarfile.TarInfo(\"golden/tty\"); ti.type = tarfile.CHRTYPE; t.addfile(ti)"),
        "\"golden/tty\" is a Char entry",
    );
    refused(
        r,
        &shipped,
        "python fifo",
        &py_hostile("ti = tarfile.TarInfo(\"fifo\"); ti.type = tarfile.FIFOTYPE; t.addfile(ti)"),
        "\"fifo\" is a Fifo entry",
    );
    refused(
        r,
        &shipped,
        "python many folders",
        &py_hostile(
            "for i in range(400):\n        ti = tarfile.TarInfo(\"d%d\" % i); ti.type = tarfile.DIRTYPE; t.addfile(ti)",
        ),
        "more than 272 entries",
    );
    refused(
        r,
        &shipped,
        "python many files",
        &py_hostile("[t.addfile(tarfile.TarInfo(\"f%d\" % i), io.BytesIO(b\"\")) for i in range(100)]"),
        "more than 64 files",
    );
    // 80 MB of zeros in a gzip of about 80 KB.
    refused(
        r,
        &shipped,
        "python gzip bomb",
        &py_hostile(
            "ti = tarfile.TarInfo(\"pad.bin\"); ti.size = 80 * 1024 * 1024\n    class Z:\n        def read(self, n=-1): return bytes(n)\n    t.addfile(ti, Z())",
        ),
        "larger than 67108864 bytes",
    );
    refused(
        r,
        &shipped,
        "xz",
        r#"tar -C "$B" -cJf "$O" ."#,
        "it is an xz file; pack the bundle as .tar or .tar.gz",
    );
}

#[test]
fn hostile_tool_made_archives_are_refused_by_the_node_and_change_nothing() {
    let rig = Rig::new("ba-hostile-node");
    let root = TempDir::new("ba-hostile-node-files");
    let shipped = ship(root.path(), "1.1.0", &rig.keys.release);
    let b = Bundle::from_dir(&shipped.dir, Default::default()).unwrap();
    for (i, (snippet, code, needle)) in [
        (
            "ti = tarfile.TarInfo(\"ok.bin\"); ti.size = 1; ti.pax_headers = {\"path\": \"../../evil\"}; t.addfile(ti, io.BytesIO(b\"x\"))",
            "bundle_unsafe_path",
            "\"../../evil\" is refused",
        ),
        (
            "ti = tarfile.TarInfo(\"golden/lnk\"); ti.type = tarfile.LNKTYPE; ti.linkname = \"model.onnx\"; t.addfile(ti)",
            "bundle_not_a_file",
            "hard link",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let work = root.path().join(format!("w{i}"));
        std::fs::create_dir_all(&work).unwrap();
        let archive = work.join("b.tar.gz");
        sh(&py_hostile(snippet), &shipped.dir, &archive, &work);
        let tok = rig.token(&deploy_claims(&b));
        rig.assert_refused(rig.deploy_archive(std::fs::read(&archive).unwrap(), &tok), code, needle, 1);
    }
}
