//! The CLI and configuration references (docs/cli.md, docs/configuration.md)
//! are the binaries' own `--help`, so they cannot drift: this test runs the
//! same `--help` commands and fails when a documented block differs from
//! what its command prints now, or when a command reachable from
//! `meridian --help` has no section.
//!
//! It is also the generator: with `MERIDIAN_WRITE_REFERENCE=1` it rewrites
//! everything below each file's marker line instead of checking it
//! (`scripts/gen-reference` builds the binaries and does that). The
//! hand-written introduction above the marker is kept as it is.

use std::path::PathBuf;
use std::process::Command;

/// The line between a reference's hand-written introduction and its generated part.
const MARKER: &str = "<!-- Generated below this line by scripts/gen-reference from the binaries' --help; do not edit by hand. -->";

const REGENERATE: &str = "run scripts/gen-reference to regenerate it from the binaries \
     (it builds them and rewrites docs/cli.md and docs/configuration.md below their marker line)";

/// Set to 1 to rewrite the references instead of checking them.
const WRITE_ENV: &str = "MERIDIAN_WRITE_REFERENCE";

/// A command line whose help a reference shows: the program, then subcommands.
type CommandLine = Vec<String>;

/// One section of a reference: a command line and its help text.
#[derive(Debug, Clone, PartialEq)]
struct Section {
    command: CommandLine,
    help: String,
}

/// One reference file and the command lines it documents.
struct Reference {
    file: &'static str,
    /// The command lines, in document order.
    commands: fn() -> Result<Vec<CommandLine>, String>,
}

const CLI: Reference = Reference {
    file: "cli.md",
    commands: every_meridian_command,
};

const CONFIGURATION: Reference = Reference {
    file: "configuration.md",
    commands: long_running_processes,
};

fn line(words: &[&str]) -> CommandLine {
    words.iter().map(|w| w.to_string()).collect()
}

/// `meridian` and every subcommand reachable from it, depth first, in the
/// order `--help` lists them.
fn every_meridian_command() -> Result<Vec<CommandLine>, String> {
    let mut found = Vec::new();
    walk(line(&["meridian"]), &mut found)?;
    Ok(found)
}

fn walk(command: CommandLine, found: &mut Vec<CommandLine>) -> Result<(), String> {
    let text = help(&command)?;
    found.push(command.clone());
    for child in subcommands(&text) {
        let mut next = command.clone();
        next.push(child);
        walk(next, found)?;
    }
    Ok(())
}

/// The processes that run for a long time, configured by flags and environment.
fn long_running_processes() -> Result<Vec<CommandLine>, String> {
    Ok(vec![
        line(&["meridian", "server"]),
        line(&["meridian-agent"]),
        line(&["meridian-proxy"]),
    ])
}

/// What `COMMAND --help` prints, each line without trailing blanks (which
/// editors strip). The environment is cleared: clap shows the value of
/// every variable a flag reads (`[env: MERIDIAN_SERVER=...]`), which would
/// put the caller's settings, or a token, into the reference.
fn help(command: &[String]) -> Result<String, String> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| "an empty command line".to_string())?;
    let shown = command.join(" ");
    let output = Command::new(meridian_tests::binary(program))
        .args(args)
        .arg("--help")
        .env_clear()
        .output()
        .map_err(|e| format!("`{shown} --help` did not run: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(format!("`{shown} --help` failed: {}", first.trim()));
    }
    let text = String::from_utf8(output.stdout)
        .map_err(|_| format!("`{shown} --help` printed something that is not UTF-8"))?;
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let text = lines.join("\n").trim_end().to_string();
    if text.contains("```") {
        return Err(format!(
            "`{shown} --help` contains ```, which would end its fenced block"
        ));
    }
    Ok(text)
}

/// The subcommands a help text lists under "Commands:", but `help`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim_end() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // A command's line is indented by two spaces; deeper lines continue a description.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .map(|name| name.trim_end_matches(',').to_string())
        .filter(|name| name != "help")
        .collect()
}

fn heading(command: &[String]) -> String {
    // `meridian` and its commands at one level, their subcommands below.
    let level = if command.len() <= 2 { "##" } else { "###" };
    format!("{level} `{}`", command.join(" "))
}

/// The generated part of a reference.
fn render(sections: &[Section]) -> String {
    sections
        .iter()
        .map(|s| format!("{}\n\n```text\n{}\n```\n", heading(&s.command), s.help))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The sections of a generated part: each heading naming a command in
/// backticks, and the fenced block that follows it.
fn parse(generated: &str) -> Result<Vec<Section>, String> {
    let mut sections = Vec::new();
    let mut command: Option<CommandLine> = None;
    let mut lines = generated.lines().enumerate();
    while let Some((number, text)) = lines.next() {
        let number = number + 1;
        if text.starts_with('#') {
            let title = text.trim_start_matches('#').trim();
            let Some(named) = title
                .strip_prefix('`')
                .and_then(|t| t.strip_suffix('`'))
                .filter(|t| !t.is_empty())
            else {
                return Err(format!(
                    "line {number} below the marker: the heading \"{text}\" does not name a command in backticks"
                ));
            };
            command = Some(named.split_whitespace().map(str::to_string).collect());
        } else if text.starts_with("```") {
            let Some(current) = command.take() else {
                return Err(format!(
                    "line {number} below the marker: a fenced block without a heading naming its command"
                ));
            };
            let mut body = Vec::new();
            loop {
                match lines.next() {
                    Some((_, "```")) => break,
                    Some((_, inner)) => body.push(inner),
                    None => {
                        return Err(format!(
                            "line {number} below the marker: the fenced block is not closed"
                        ))
                    }
                }
            }
            sections.push(Section {
                command: current,
                help: body.join("\n"),
            });
        } else if !text.trim().is_empty() {
            return Err(format!(
                "line {number} below the marker: unexpected text \"{text}\" (only headings and fenced --help blocks belong there)"
            ));
        }
    }
    if let Some(orphan) = command {
        return Err(format!(
            "the section `{}` has no fenced block",
            orphan.join(" ")
        ));
    }
    Ok(sections)
}

fn path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("docs")
        .join(file)
}

/// The hand-written introduction (through the marker line) and the generated rest.
fn split(text: &str) -> Option<(&str, &str)> {
    let start = text.find(MARKER)?;
    let end = start + MARKER.len();
    Some((&text[..end], &text[end..]))
}

/// Every problem with a reference's generated part, as one line each.
fn problems(reference: &Reference, generated: &str) -> Vec<String> {
    let documented = match parse(generated) {
        Ok(sections) => sections,
        Err(e) => return vec![e],
    };
    let mut problems = Vec::new();
    for section in &documented {
        let shown = section.command.join(" ");
        match help(&section.command) {
            Ok(current) if current == section.help => {}
            Ok(_) => problems.push(format!(
                "the block under `{shown}` is not what `{shown} --help` prints now"
            )),
            Err(e) => problems.push(format!("a section documents `{shown}`, but {e}")),
        }
    }
    let expected = match (reference.commands)() {
        Ok(commands) => commands,
        Err(e) => {
            problems.push(e);
            return problems;
        }
    };
    for command in &expected {
        if !documented.iter().any(|s| &s.command == command) {
            problems.push(format!(
                "`{}` has no section (a new command or subcommand?)",
                command.join(" ")
            ));
        }
    }
    for section in &documented {
        if !expected.contains(&section.command) {
            problems.push(format!(
                "`{}` is documented here but is not one of this reference's commands",
                section.command.join(" ")
            ));
        }
    }
    if problems.is_empty() {
        let order: Vec<&CommandLine> = documented.iter().map(|s| &s.command).collect();
        let wanted: Vec<&CommandLine> = expected.iter().collect();
        if order != wanted || render(&documented).trim() != generated.trim() {
            problems.push("the sections are right, but their order or layout is not what the generator writes".into());
        }
    }
    problems
}

/// Rewrites the generated part of a reference from the binaries.
fn write(reference: &Reference, introduction: &str) -> Result<usize, String> {
    let sections = (reference.commands)()?
        .into_iter()
        .map(|command| {
            let help = help(&command)?;
            Ok(Section { command, help })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let text = format!("{introduction}\n\n{}", render(&sections));
    std::fs::write(path(reference.file), text)
        .map_err(|e| format!("writing docs/{}: {e}", reference.file))?;
    Ok(sections.len())
}

fn check_or_write(reference: &Reference) {
    let file = path(reference.file);
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    let Some((introduction, generated)) = split(&text) else {
        panic!(
            "docs/{} has no marker line; it needs its hand-written introduction followed by\n{MARKER}",
            reference.file
        );
    };
    if std::env::var(WRITE_ENV).is_ok_and(|v| v == "1") {
        match write(reference, introduction) {
            Ok(count) => eprintln!("wrote docs/{} ({count} sections)", reference.file),
            Err(e) => panic!("docs/{} was not written: {e}", reference.file),
        }
        return;
    }
    let problems = problems(reference, generated);
    assert!(
        problems.is_empty(),
        "docs/{} does not match the binaries' --help:\n  - {}\n{REGENERATE}",
        reference.file,
        problems.join("\n  - ")
    );
}

#[test]
fn the_cli_reference_is_the_help_of_every_meridian_command() {
    check_or_write(&CLI);
}

#[test]
fn the_configuration_reference_is_the_help_of_the_long_running_processes() {
    check_or_write(&CONFIGURATION);
}

#[test]
fn subcommands_are_read_from_the_commands_section() {
    let help = "About\n\nUsage: meridian members [OPTIONS] <COMMAND>\n\nCommands:\n  list     \n  add      Add a node\n             continued description\n  snapshot, snap  Save or restore\n  help     Print this message\n\nOptions:\n  -h, --help  Print help\n";
    assert_eq!(subcommands(help), ["list", "add", "snapshot"]);
    assert!(subcommands("Usage: meridian-agent [OPTIONS]\n\nOptions:\n  -h, --help\n").is_empty());
}

#[test]
fn what_is_rendered_parses_back() {
    let sections = vec![
        Section {
            command: line(&["meridian"]),
            help: "Usage: meridian <COMMAND>\n\nCommands:\n  get  Show".into(),
        },
        Section {
            command: line(&["meridian", "members", "add"]),
            help: "Add a node as a learner".into(),
        },
    ];
    let text = render(&sections);
    assert!(text.contains("### `meridian members add`"), "{text}");
    assert_eq!(parse(&text), Ok(sections));
    assert!(parse("## `meridian`\n\nstray words\n").is_err());
    assert!(parse("```text\nno heading\n```\n").is_err());
    assert!(parse("## not a command\n").is_err());
}
