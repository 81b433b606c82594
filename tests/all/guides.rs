//! The guides' samples are built and run: every `yaml` block of
//! `host/flow/GUIDE.md` validates against the installed example plugins,
//! and each one with a `# dry run:` line completes under `settle flow test`.

use crate::support;
use std::path::Path;

/// The fenced blocks of `lang` in `text`, in order.
fn blocks<'t>(text: &'t str, lang: &str) -> Vec<&'t str> {
    let fence = format!("```{lang}\n");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let Some(end) = body.find("\n```") else { break };
        out.push(&body[..end]);
        rest = &body[end..];
    }
    out
}

#[test]
fn every_flow_of_the_flow_guide_validates_and_its_dry_runs_complete() {
    let guide = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../host/flow/GUIDE.md"),
    )
    .unwrap();
    let flows = blocks(&guide, "yaml");
    assert!(flows.len() >= 6, "the guide has {} flows", flows.len());
    let dir = support::tempdir();
    let config = support::write_config(dir.path(), None);
    let config = config.to_str().unwrap();
    let mut dry_runs = 0;
    for (i, flow) in flows.iter().enumerate() {
        let file = dir.path().join(format!("guide-{i}.yaml"));
        std::fs::write(&file, flow).unwrap();
        let file = file.to_str().unwrap();
        let (code, out, err) =
            support::settle(&["--config", config, "flow", "validate", file]).unwrap();
        assert_eq!(code, 0, "sample {i} of the guide:\n{flow}\n{out}{err}");
        let Some(args) = flow
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# dry run: "))
        else {
            continue;
        };
        let mut command = vec!["--config", config, "flow", "test", file];
        command.extend(args.split_whitespace());
        let (code, out, err) = support::settle(&command).unwrap();
        assert_eq!(code, 0, "dry run of sample {i}:\n{flow}\n{out}{err}");
        assert!(out.contains("every step completed or was skipped"), "{out}");
        dry_runs += 1;
    }
    assert!(dry_runs >= 4, "{dry_runs} dry runs");
}
