//! Plan rules: ids, dependencies (no unknowns, no cycles), ranges, paths and patches.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::error::{PlanError, PlanIssue, PlanWarning};
use super::model::{PatchPosition, Plan, Step, StepBehaviour};
use crate::ids::{StepId, is_safe_id};

/// The largest `estimated_tokens` accepted; no model has a larger window.
pub const MAX_ESTIMATED_TOKENS: u64 = 10_000_000;

/// A plan that passed every rule, with its dependency graph resolved to indices.
///
/// Only a `ValidPlan` can be run: the orchestrator never sees an unknown dependency or a cycle.
#[derive(Debug, Clone)]
pub struct ValidPlan {
    plan: Plan,
    warnings: Vec<PlanWarning>,
    dependencies: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    levels: Vec<Vec<usize>>,
}

impl ValidPlan {
    /// The plan itself.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Things worth the author's attention that do not stop the plan.
    pub fn warnings(&self) -> &[PlanWarning] {
        &self.warnings
    }

    /// Adds warnings found earlier (e.g. while parsing).
    pub fn with_warnings(mut self, mut earlier: Vec<PlanWarning>) -> Self {
        earlier.append(&mut self.warnings);
        self.warnings = earlier;
        self
    }

    /// The steps, in plan order.
    pub fn steps(&self) -> &[Step] {
        &self.plan.steps
    }

    /// Indices of the steps that step `index` depends on.
    pub fn dependencies_of(&self, index: usize) -> &[usize] {
        &self.dependencies[index]
    }

    /// Indices of the steps that depend on step `index`.
    pub fn dependents_of(&self, index: usize) -> &[usize] {
        &self.dependents[index]
    }

    /// Steps grouped by depth: level 0 has no dependencies, level n depends on level < n,
    /// with at least one dependency at level n − 1.
    pub fn levels(&self) -> &[Vec<usize>] {
        &self.levels
    }

    /// The level of each step, by step index.
    pub fn level_of_each_step(&self) -> Vec<usize> {
        let mut out = vec![0; self.plan.steps.len()];
        for (level, members) in self.levels.iter().enumerate() {
            for &i in members {
                out[i] = level;
            }
        }
        out
    }
}

impl Plan {
    /// Checks every rule and returns the runnable plan, or every problem at once.
    pub fn validate(self) -> Result<ValidPlan, PlanError> {
        let mut issues = Vec::new();
        let mut warnings = Vec::new();

        if !is_safe_id(self.task_id.as_str()) {
            issues.push(PlanIssue {
                location: "task_id".into(),
                message: format!(
                    "`{}` cannot name the run folder: use letters, digits, `_`, `-` or `.` \
                     (at most 128, not starting with `.`)",
                    self.task_id
                ),
            });
        }
        if self.steps.is_empty() {
            issues.push(PlanIssue {
                location: "steps".into(),
                message: "the plan has no steps: add at least one step with `id`, \
                          `description` and `type`"
                    .into(),
            });
        }

        let mut index: HashMap<&StepId, usize> = HashMap::new();
        for (i, step) in self.steps.iter().enumerate() {
            let at = |field: &str| format!("steps[{i}] (`{}`).{field}", step.id);
            if !is_safe_id(step.id.as_str()) {
                issues.push(PlanIssue {
                    location: format!("steps[{i}].id"),
                    message: format!(
                        "`{}` is not a usable step id: use letters, digits, `_`, `-` or `.` \
                         (at most 128, not starting with `.`)",
                        step.id
                    ),
                });
            }
            if let Some(first) = index.insert(&step.id, i) {
                issues.push(PlanIssue {
                    location: format!("steps[{i}].id"),
                    message: format!(
                        "duplicate step id `{}` (also steps[{first}]): give each step its own id",
                        step.id
                    ),
                });
                index.insert(&step.id, first);
            }
            if step.description.trim().is_empty() {
                issues.push(PlanIssue {
                    location: at("description"),
                    message: "empty: say what the step must do".into(),
                });
            }
            if let Some(c) = step.complexity
                && !(0.0..=1.0).contains(&c)
            {
                issues.push(PlanIssue {
                    location: at("complexity"),
                    message: format!("{c} is out of range: use a number from 0 to 1"),
                });
            }
            if let Some(t) = step.estimated_tokens
                && (t == 0 || t > MAX_ESTIMATED_TOKENS)
            {
                issues.push(PlanIssue {
                    location: at("estimated_tokens"),
                    message: format!(
                        "{t} is out of range: use a whole number from 1 to {MAX_ESTIMATED_TOKENS}"
                    ),
                });
            }
            check_paths(step, i, &mut issues);
            check_patches(step, i, &mut issues, &mut warnings);
        }

        let known = || {
            let mut ids: Vec<&str> = self.steps.iter().map(|s| s.id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            ids.join(", ")
        };
        let mut dependencies = vec![Vec::new(); self.steps.len()];
        for (i, step) in self.steps.iter().enumerate() {
            let mut seen = HashSet::new();
            for (d, dep) in step.dependencies.iter().enumerate() {
                let location = format!("steps[{i}] (`{}`).dependencies[{d}]", step.id);
                if dep == &step.id {
                    issues.push(PlanIssue {
                        location,
                        message: format!(
                            "step `{dep}` depends on itself: remove it from its own dependencies"
                        ),
                    });
                } else if let Some(&j) = index.get(dep) {
                    if seen.insert(j) {
                        dependencies[i].push(j);
                    } else {
                        warnings.push(PlanWarning {
                            location,
                            message: format!("`{dep}` is listed twice; once is enough"),
                        });
                    }
                } else {
                    issues.push(PlanIssue {
                        location,
                        message: format!(
                            "dependency `{dep}` does not exist (known steps: {})",
                            known()
                        ),
                    });
                }
            }
        }

        if let Some(cycle) = find_cycle(&dependencies) {
            let names: Vec<String> = cycle
                .iter()
                .map(|&i| format!("`{}`", self.steps[i].id))
                .collect();
            issues.push(PlanIssue {
                location: format!("steps[{}].dependencies", cycle[0]),
                message: format!(
                    "dependency cycle: {} (each needs the next); remove one of these dependencies",
                    names.join(" → ")
                ),
            });
        }

        if !issues.is_empty() {
            return Err(PlanError::Invalid { issues });
        }

        let levels = levels(&dependencies);
        let mut dependents = vec![Vec::new(); self.steps.len()];
        for (i, deps) in dependencies.iter().enumerate() {
            for &d in deps {
                dependents[d].push(i);
            }
        }
        warn_on_concurrent_writers(&self.steps, &dependencies, &levels, &mut warnings);

        Ok(ValidPlan {
            plan: self,
            warnings,
            dependencies,
            dependents,
            levels,
        })
    }
}

/// Why a path written in a plan cannot be used, if it cannot; `None` when it is a plain
/// relative path that stays inside the workspace.
pub fn relative_path_problem(path: &str) -> Option<String> {
    if path.trim().is_empty() {
        return Some("empty path: name a file relative to the workspace root".into());
    }
    if path.contains('\0') {
        return Some("the path contains a NUL byte".into());
    }
    let bytes = path.as_bytes();
    let drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if path.starts_with('/') || path.starts_with('\\') || drive {
        return Some(format!(
            "`{path}` is absolute: write it relative to the workspace root"
        ));
    }
    if path.split(['/', '\\']).any(|c| c == "..") {
        return Some(format!(
            "`{path}` uses `..`: paths must stay inside the workspace, write it without `..`"
        ));
    }
    None
}

fn is_pattern_or_dir(path: &str) -> bool {
    path.contains(['*', '?', '[']) || path.ends_with('/') || path.ends_with('\\')
}

fn check_paths(step: &Step, i: usize, issues: &mut Vec<PlanIssue>) {
    let writes = step.step_type.behaviour() != StepBehaviour::Analyse;
    for (field, list) in [
        ("files", &step.context.files),
        ("input_files", &step.context.input_files),
        ("tests", &step.context.tests),
    ] {
        for (k, path) in list.iter().enumerate() {
            let location = format!("steps[{i}] (`{}`).context.{field}[{k}]", step.id);
            if let Some(problem) = relative_path_problem(path) {
                issues.push(PlanIssue {
                    location,
                    message: problem,
                });
            } else if writes && field == "files" && is_pattern_or_dir(path) {
                issues.push(PlanIssue {
                    location,
                    message: format!(
                        "`{path}` is a pattern or a folder, but a {} step writes each file in \
                         `files`: name the files one by one, or move the pattern to `input_files`",
                        step.step_type
                    ),
                });
            }
        }
    }
}

fn check_patches(
    step: &Step,
    i: usize,
    issues: &mut Vec<PlanIssue>,
    warnings: &mut Vec<PlanWarning>,
) {
    let has_patch = step.patches().next().is_some();
    if step.step_type == super::model::StepType::Patch && !has_patch {
        warnings.push(PlanWarning {
            location: format!("steps[{i}] (`{}`).context", step.id),
            message: "patch step without `context.patch`: the model must return each file in \
                      `files` whole"
                .into(),
        });
    }
    let entries = step
        .context
        .patch
        .iter()
        .map(|p| ("patch".to_owned(), p))
        .chain(
            step.context
                .patches
                .iter()
                .enumerate()
                .map(|(k, p)| (format!("patches[{k}]"), p)),
        );
    for (name, patch) in entries {
        let location = format!("steps[{i}] (`{}`).context.{name}", step.id);
        let anchored = patch.marker.is_some() || patch.line.is_some();
        match patch.position {
            PatchPosition::Before | PatchPosition::After if !anchored => {
                issues.push(PlanIssue {
                    location: location.clone(),
                    message: format!(
                        "position `{}` needs `marker` (the text to insert next to) or `line`",
                        if patch.position == PatchPosition::Before {
                            "before"
                        } else {
                            "after"
                        }
                    ),
                });
            }
            PatchPosition::Replace
                if patch.marker_start.is_some() != patch.marker_end.is_some() =>
            {
                issues.push(PlanIssue {
                    location: location.clone(),
                    message: "`replace` needs both `marker_start` and `marker_end` (or neither, \
                              to replace the whole target file)"
                        .into(),
                });
            }
            _ => {}
        }
        if patch.line == Some(0) {
            issues.push(PlanIssue {
                location: location.clone(),
                message: "`line` is 1-based: use 1 for the first line".into(),
            });
        }
        if let Some(target) = &patch.target_file {
            if let Some(problem) = relative_path_problem(target) {
                issues.push(PlanIssue {
                    location: format!("{location}.target_file"),
                    message: problem,
                });
            } else if !step.context.files.iter().any(|f| f == target) {
                issues.push(PlanIssue {
                    location: format!("{location}.target_file"),
                    message: format!(
                        "`{target}` is not in this step's `context.files` ({}): add it there so \
                         the step may change it",
                        if step.context.files.is_empty() {
                            "which is empty".to_owned()
                        } else {
                            format!("which lists {}", step.context.files.join(", "))
                        }
                    ),
                });
            }
        }
    }
}

/// A cycle as a list of step indices where each needs the next and the last needs the first
/// (the first is repeated at the end), or `None`.
fn find_cycle(dependencies: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut marks = vec![Mark::New; dependencies.len()];
    for root in 0..dependencies.len() {
        if marks[root] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next edge to try); the stack is the current path.
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        marks[root] = Mark::Open;
        while let Some(&mut (node, ref mut edge)) = stack.last_mut() {
            if let Some(&next) = dependencies[node].get(*edge) {
                *edge += 1;
                match marks[next] {
                    Mark::New => {
                        marks[next] = Mark::Open;
                        stack.push((next, 0));
                    }
                    Mark::Open => {
                        let start = stack.iter().position(|&(n, _)| n == next).unwrap_or(0);
                        let mut cycle: Vec<usize> =
                            stack[start..].iter().map(|&(n, _)| n).collect();
                        cycle.push(next);
                        return Some(cycle);
                    }
                    Mark::Done => {}
                }
            } else {
                marks[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}

/// Kahn's algorithm by depth; the graph is known to be acyclic.
fn levels(dependencies: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = dependencies.len();
    let mut depth = vec![0usize; n];
    let mut remaining: Vec<usize> = dependencies.iter().map(Vec::len).collect();
    let mut dependents = vec![Vec::new(); n];
    for (i, deps) in dependencies.iter().enumerate() {
        for &d in deps {
            dependents[d].push(i);
        }
    }
    let mut queue: Vec<usize> = (0..n).filter(|&i| remaining[i] == 0).collect();
    let mut head = 0;
    while head < queue.len() {
        let node = queue[head];
        head += 1;
        for &next in &dependents[node] {
            depth[next] = depth[next].max(depth[node] + 1);
            remaining[next] -= 1;
            if remaining[next] == 0 {
                queue.push(next);
            }
        }
    }
    let top = depth.iter().copied().max().unwrap_or(0);
    let mut out = vec![Vec::new(); if n == 0 { 0 } else { top + 1 }];
    for (i, d) in depth.into_iter().enumerate() {
        out[d].push(i);
    }
    out
}

fn warn_on_concurrent_writers(
    steps: &[Step],
    dependencies: &[Vec<usize>],
    levels: &[Vec<usize>],
    warnings: &mut Vec<PlanWarning>,
) {
    let mut writers: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, step) in steps.iter().enumerate() {
        if step.step_type.behaviour() == StepBehaviour::Analyse {
            continue;
        }
        for f in &step.context.files {
            writers.entry(f.as_str()).or_default().push(i);
        }
    }
    if writers.values().all(|w| w.len() < 2) {
        return;
    }
    // Ancestor sets, computed level by level so each step's dependencies are done first.
    let mut ancestors: Vec<HashSet<usize>> = vec![HashSet::new(); steps.len()];
    for level in levels {
        for &i in level {
            let mut set = HashSet::new();
            for &d in &dependencies[i] {
                set.insert(d);
                set.extend(ancestors[d].iter().copied());
            }
            ancestors[i] = set;
        }
    }
    for (file, ws) in writers {
        for (a, &x) in ws.iter().enumerate() {
            for &y in &ws[a + 1..] {
                if !ancestors[x].contains(&y) && !ancestors[y].contains(&x) {
                    warnings.push(PlanWarning {
                        location: format!("steps[{y}] (`{}`).context.files", steps[y].id),
                        message: format!(
                            "`{file}` is also written by `{}` and neither step depends on the \
                             other, so they may run at the same time; add a dependency to order them",
                            steps[x].id
                        ),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::{PlanFormat, parse_plan};
    use super::*;

    fn plan(steps_json: &str) -> Plan {
        let text = format!(r#"{{"task_id":"t","description":"d","steps":{steps_json}}}"#);
        parse_plan(&text, PlanFormat::Json).expect("parses").0
    }

    fn step(id: &str, deps: &[&str]) -> String {
        let deps: Vec<String> = deps.iter().map(|d| format!("\"{d}\"")).collect();
        format!(
            r#"{{"id":"{id}","description":"do {id}","type":"code_generation","dependencies":[{}],"context":{{"files":["{id}.py"]}}}}"#,
            deps.join(",")
        )
    }

    fn issues(p: Plan) -> Vec<PlanIssue> {
        match p.validate() {
            Err(PlanError::Invalid { issues }) => issues,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn levels_group_steps_by_dependency_depth() {
        let p = plan(&format!(
            "[{},{},{},{}]",
            step("a", &[]),
            step("b", &["a"]),
            step("c", &[]),
            step("d", &["b", "c"])
        ));
        let v = p.validate().expect("valid");
        assert_eq!(v.levels(), &[vec![0, 2], vec![1], vec![3]]);
        assert_eq!(v.dependencies_of(3), &[1, 2]);
        assert_eq!(v.dependents_of(0), &[1]);
    }

    #[test]
    fn unknown_dependency_names_the_known_steps() {
        let found = issues(plan(&format!(
            "[{},{}]",
            step("a", &[]),
            step("b", &["zz"])
        )));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].location, "steps[1] (`b`).dependencies[0]");
        assert!(
            found[0]
                .message
                .contains("`zz` does not exist (known steps: a, b)")
        );
    }

    #[test]
    fn cycles_are_reported_with_their_path() {
        let found = issues(plan(&format!(
            "[{},{},{}]",
            step("a", &["c"]),
            step("b", &["a"]),
            step("c", &["b"])
        )));
        assert_eq!(found.len(), 1);
        assert!(
            found[0].message.contains("`a` → `c` → `b` → `a`"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn self_dependency_and_duplicates_are_errors() {
        let found = issues(plan(&format!("[{},{}]", step("a", &["a"]), step("a", &[]))));
        let all: Vec<&str> = found.iter().map(|i| i.message.as_str()).collect();
        assert!(
            all.iter().any(|m| m.contains("depends on itself")),
            "{all:?}"
        );
        assert!(
            all.iter().any(|m| m.contains("duplicate step id `a`")),
            "{all:?}"
        );
    }

    #[test]
    fn empty_plan_and_bad_numbers_are_rejected_all_at_once() {
        assert!(issues(plan("[]"))[0].message.contains("no steps"));
        let text = step("a", &[]).replace(
            r#""type":"code_generation""#,
            r#""type":"code_generation","complexity":1.5,"estimated_tokens":0"#,
        );
        let found = issues(plan(&format!("[{text}]")));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].message.contains("1.5 is out of range"));
        assert!(found[1].message.contains("0 is out of range"));
    }

    #[test]
    fn paths_must_stay_inside_the_workspace() {
        for bad in [
            "/etc/passwd",
            "../x.py",
            "a/../../b",
            "C:\\w.py",
            "\\\\srv\\x",
            "",
        ] {
            assert!(relative_path_problem(bad).is_some(), "{bad:?} accepted");
        }
        for good in ["src/app.py", "Frontend/3. STENCILER/x.js", "a..b/c.py"] {
            assert!(relative_path_problem(good).is_none(), "{good:?} rejected");
        }
        let s = step("a", &[]).replace("a.py", "../a.py");
        assert!(
            issues(plan(&format!("[{s}]")))[0]
                .message
                .contains("uses `..`")
        );
    }

    #[test]
    fn written_files_cannot_be_patterns_but_analysis_inputs_can() {
        let s = step("a", &[]).replace("a.py", "src/**/*.py");
        assert!(
            issues(plan(&format!("[{s}]")))[0]
                .message
                .contains("pattern or a folder")
        );
        let analysis = s.replace("code_generation", "analysis");
        assert!(plan(&format!("[{analysis}]")).validate().is_ok());
    }

    #[test]
    fn patches_need_an_anchor_and_a_listed_target() {
        let s = step("a", &[]).replace(
            r#""files":["a.py"]"#,
            r#""files":["a.py"],"patch":{"position":"after","target_file":"b.py"}"#,
        );
        let found = issues(plan(&format!("[{s}]")));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].message.contains("needs `marker`"));
        assert!(
            found[1]
                .message
                .contains("not in this step's `context.files`")
        );
    }

    #[test]
    fn unordered_writers_of_one_file_get_a_warning() {
        let a = step("a", &[]);
        let b = step("b", &[]).replace("b.py", "a.py");
        let v = plan(&format!("[{a},{b}]")).validate().expect("valid");
        assert_eq!(v.warnings().len(), 1);
        assert!(v.warnings()[0].message.contains("may run at the same time"));

        let ordered = step("b", &["a"]).replace("b.py", "a.py");
        let v = plan(&format!("[{a},{ordered}]")).validate().expect("valid");
        assert!(v.warnings().is_empty());
    }

    #[test]
    fn unsafe_task_ids_are_rejected() {
        let text = r#"{"task_id":"../x","description":"d","steps":[]}"#;
        let p = parse_plan(text, PlanFormat::Json).expect("parses").0;
        let found = issues(p);
        assert!(found[0].message.contains("cannot name the run folder"));
    }
}
