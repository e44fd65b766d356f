//! Compile-time checks on a hook file, by walking its AST.
//!
//! - Only `import "mta"` and `const` may stand outside functions (top-level code
//!   would otherwise run before every call).
//! - Every `import` names the built-in `mta` module: no other module exists.
//! - Every property and method used on the hook function's `ctx` parameter exists
//!   at the hook's stage (`ctx.rcpt` in a connect hook is an error here, not a
//!   surprise at runtime), following `ctx` into helper functions it is passed to.
//!   The fields found are the [`FieldSet`] a call copies into `ctx`; when `ctx`
//!   escapes in a way the walk cannot follow (a closure, a collection, a
//!   function pointer), every field available at the stage is copied and the
//!   getters check again at runtime.
//! - `mta::listed` / `mta::lookup` with a literal name refer to a set or table the
//!   configuration defines (when the caller knows the names).

use std::collections::BTreeSet;

use rhai::{AST, ASTFlags, ASTNode, Expr, FnCallExpr, Position, Stmt};

use super::KnownNames;
use super::context::{Field, FieldSet, METHODS};
use crate::policy::Stage;

/// The functions of `mta` (the Rhai half and the native half).
const MTA_FUNCTIONS: [&str; 10] = [
    "dns_a",
    "dns_aaaa",
    "dns_txt",
    "dns_ptr",
    "parse_address",
    "domain_of",
    "local_of",
    "domain_matches",
    "listed",
    "lookup",
];

const ADDRESS_FIELDS: [&str; 4] = ["address", "local", "domain", "is_null"];
const CLIENT_FIELDS: [&str; 2] = ["ip", "port"];
/// Methods every value has, harmless on `ctx`.
const GENERIC_METHODS: [&str; 3] = ["type_of", "to_string", "to_debug"];

/// An error found by the checks.
pub(crate) struct Finding {
    pub pos: Position,
    pub message: String,
}

/// The static type of a value reached from `ctx`, as far as the walk knows it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ty {
    Ctx,
    Address,
    Client,
    Other,
}

struct Checker<'a> {
    ast: &'a AST,
    stage: Stage,
    uses: FieldSet,
    escapes: bool,
    findings: Vec<Finding>,
}

/// Checks `ast`, whose hook function is `function` (already known to exist with one
/// parameter). Returns the fields the hook reads, or every error found.
pub(crate) fn check(
    ast: &AST,
    function: &str,
    stage: Stage,
    known: &KnownNames,
) -> Result<FieldSet, Vec<Finding>> {
    let mut c = Checker {
        ast,
        stage,
        uses: FieldSet::default(),
        escapes: false,
        findings: Vec::new(),
    };
    c.top_level();
    let aliases = c.imports();
    c.mta_calls(&aliases, known);
    c.context(function);
    if c.findings.is_empty() {
        Ok(if c.escapes { FieldSet::ALL } else { c.uses })
    } else {
        c.findings.sort_by_key(|f| (f.pos.line(), f.pos.position()));
        Err(c.findings)
    }
}

fn is_variable(expr: &Expr, name: &str) -> bool {
    matches!(expr, Expr::Variable(x, ..) if x.2.is_empty() && x.1 == name)
}

fn suggest<'n>(word: &str, candidates: impl IntoIterator<Item = &'n str>) -> String {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

impl Checker<'_> {
    fn error(&mut self, pos: Position, message: String) {
        self.findings.push(Finding { pos, message });
    }

    fn top_level(&mut self) {
        for stmt in self.ast.statements() {
            match stmt {
                Stmt::Import(..) | Stmt::Noop(..) => {}
                Stmt::Var(_, flags, _) if flags.contains(ASTFlags::CONSTANT) => {}
                other => self.error(
                    other.position(),
                    "only `import` and `const` may stand outside a function in a hook file \
                     (top-level code would run before every call): move this into a function"
                        .to_owned(),
                ),
            }
        }
    }

    /// Checks every `import` (anywhere in the file) and returns the aliases of `mta`.
    fn imports(&mut self) -> BTreeSet<String> {
        let mut aliases = BTreeSet::new();
        let mut bad = Vec::new();
        self.ast.walk(&mut |path: &[ASTNode]| {
            if let Some(ASTNode::Stmt(Stmt::Import(x, pos))) = path.last() {
                match &x.0 {
                    Expr::StringConstant(s, _) if s == "mta" => {
                        if !x.1.name.is_empty() {
                            aliases.insert(x.1.name.to_string());
                        }
                    }
                    Expr::StringConstant(s, spos) => bad.push(Finding {
                        pos: *spos,
                        message: format!(
                            "there is no module {:?}: hooks can only import \"mta\"",
                            crate::config::sanitize_text(s, 80)
                        ),
                    }),
                    _ => bad.push(Finding {
                        pos: *pos,
                        message:
                            "an import must name the module literally: `import \"mta\" as mta;`"
                                .to_owned(),
                    }),
                }
            }
            true
        });
        self.findings.extend(bad);
        aliases
    }

    /// Checks `mta::f(...)` calls: the function exists, and a literal set or table
    /// name is one the configuration defines.
    fn mta_calls(&mut self, aliases: &BTreeSet<String>, known: &KnownNames) {
        let mut found = Vec::new();
        self.ast.walk(&mut |path: &[ASTNode]| {
            let (fc, pos): (&FnCallExpr, Position) = match path.last() {
                Some(ASTNode::Expr(Expr::FnCall(fc, pos)))
                | Some(ASTNode::Stmt(Stmt::FnCall(fc, pos))) => (fc, *pos),
                _ => return true,
            };
            if fc.namespace.is_empty() {
                return true;
            }
            let root = fc.namespace.root();
            if root != "mta" && !aliases.contains(root) {
                return true;
            }
            if fc.namespace.path.len() != 1 || !MTA_FUNCTIONS.contains(&fc.name.as_str()) {
                found.push(Finding {
                    pos,
                    message: format!(
                        "mta has no function `{}`{}",
                        fc.name,
                        suggest(&fc.name, MTA_FUNCTIONS)
                    ),
                });
                return true;
            }
            let Some(Expr::StringConstant(name, npos)) = fc.args.first() else {
                return true;
            };
            let problem = match fc.name.as_str() {
                "listed" if !known.has_set_or_table(name) => Some(format!(
                    "no set or table named {name:?}{}",
                    suggest(name, known.set_and_table_names())
                )),
                "lookup" if !known.has_table(name) => Some(format!(
                    "no table named {name:?}{}",
                    suggest(name, known.table_names())
                )),
                _ => None,
            };
            if let Some(message) = problem {
                found.push(Finding {
                    pos: *npos,
                    message,
                });
            }
            true
        });
        self.findings.extend(found);
    }

    /// Checks the uses of the hook function's parameter, and of the parameters it is
    /// passed to in helper functions.
    fn context(&mut self, function: &str) {
        let mut queue = vec![(function.to_owned(), 1usize, 0usize)];
        let mut seen = BTreeSet::new();
        while let Some((name, arity, index)) = queue.pop() {
            if !seen.insert((name.clone(), arity, index)) {
                continue;
            }
            let Some(def) = self
                .ast
                .iter_fn_def()
                .find(|f| f.name == name && f.params.len() == arity)
            else {
                self.escapes = true;
                continue;
            };
            // An AST holding just this function, to walk its body alone.
            let mut lib = rhai::Module::new();
            lib.set_script_fn(def.clone());
            let one = AST::new(Vec::new(), lib);
            let param = def.params[index].clone();
            let mut calls = Vec::new();
            one.walk(&mut |path: &[ASTNode]| {
                self.visit(path, &param, &mut calls);
                true
            });
            queue.extend(calls);
        }
    }

    fn visit(&mut self, path: &[ASTNode], param: &str, calls: &mut Vec<(String, usize, usize)>) {
        let Some(node) = path.last() else { return };
        match node {
            ASTNode::Expr(Expr::Dot(x, ..)) if is_variable(&x.lhs, param) => {
                self.chain(&x.rhs, Ty::Ctx);
            }
            ASTNode::Stmt(Stmt::Assignment(x)) => {
                if let Expr::Dot(d, ..) = &x.1.lhs
                    && is_variable(&d.lhs, param)
                {
                    self.error(
                        x.0.position(),
                        format!("`{param}` is read-only: a hook cannot change the context"),
                    );
                }
            }
            ASTNode::Expr(var @ Expr::Variable(..)) if is_variable(var, param) => {
                let parent = path.len().checked_sub(2).map(|i| path[i]);
                match parent {
                    Some(ASTNode::Expr(Expr::Dot(x, ..))) if std::ptr::eq(&x.lhs, *var) => {}
                    Some(ASTNode::Expr(Expr::FnCall(fc, _)))
                    | Some(ASTNode::Stmt(Stmt::FnCall(fc, _)))
                        if fc.namespace.is_empty() =>
                    {
                        let index = fc.args.iter().position(|a| std::ptr::eq(a, *var));
                        let defined = self
                            .ast
                            .iter_fn_def()
                            .any(|f| f.name == fc.name && f.params.len() == fc.args.len());
                        match index {
                            Some(i) if defined => {
                                calls.push((fc.name.to_string(), fc.args.len(), i));
                            }
                            _ => self.escapes = true,
                        }
                    }
                    _ => self.escapes = true,
                }
            }
            _ => {}
        }
    }

    /// Follows a property/method chain applied to a value of type `ty`.
    fn chain(&mut self, expr: &Expr, ty: Ty) -> Ty {
        match expr {
            Expr::Property(x, pos) => self.property(&x.2, *pos, ty),
            Expr::MethodCall(fc, pos) => self.method(&fc.name, *pos, ty),
            Expr::Dot(x, ..) => {
                let lhs = self.chain(&x.lhs, ty);
                self.chain(&x.rhs, lhs)
            }
            Expr::Index(x, ..) => {
                self.chain(&x.lhs, ty);
                Ty::Other
            }
            _ => Ty::Other,
        }
    }

    fn property(&mut self, name: &str, pos: Position, ty: Ty) -> Ty {
        match ty {
            Ty::Ctx => match Field::property(name) {
                Some(field) if field.available_at(self.stage) => {
                    self.uses.insert(field);
                    match field {
                        Field::Client => Ty::Client,
                        Field::Sender | Field::Rcpt => Ty::Address,
                        _ => Ty::Other,
                    }
                }
                Some(field) => {
                    let stages: Vec<&str> = field.stages().iter().map(|s| s.as_str()).collect();
                    self.error(
                        pos,
                        format!(
                            "ctx.{name} is not available in a {} hook (it exists in: {})",
                            self.stage,
                            stages.join(", ")
                        ),
                    );
                    Ty::Other
                }
                None if METHODS.iter().any(|m| m.name == name) => {
                    self.error(
                        pos,
                        format!("ctx.{name} is a method: call it as ctx.{name}(...)"),
                    );
                    Ty::Other
                }
                None => {
                    let names = Field::PROPERTIES.iter().map(|(n, _)| *n);
                    self.error(
                        pos,
                        format!("ctx has no field `{name}`{}", suggest(name, names)),
                    );
                    Ty::Other
                }
            },
            Ty::Address if !ADDRESS_FIELDS.contains(&name) => {
                self.error(
                    pos,
                    format!(
                        "an address has no field `{name}` (it has {})",
                        ADDRESS_FIELDS.join(", ")
                    ),
                );
                Ty::Other
            }
            Ty::Client if !CLIENT_FIELDS.contains(&name) => {
                self.error(
                    pos,
                    format!("ctx.client has no field `{name}` (it has ip, port)"),
                );
                Ty::Other
            }
            _ => Ty::Other,
        }
    }

    fn method(&mut self, name: &str, pos: Position, ty: Ty) -> Ty {
        if ty != Ty::Ctx || GENERIC_METHODS.contains(&name) {
            return Ty::Other;
        }
        match METHODS.iter().find(|m| m.name == name) {
            Some(method) if method.stages().contains(&self.stage) => {
                if let Some(field) = method.reads {
                    self.uses.insert(field);
                }
            }
            Some(method) if method.stages() == [Stage::Data] => self.error(
                pos,
                format!(
                    "ctx.{name}() is only available in a data hook, not in a {} hook",
                    self.stage
                ),
            ),
            Some(_) => self.error(
                pos,
                format!("ctx.{name}() is not available in a {} hook", self.stage),
            ),
            None if Field::property(name).is_some() => {
                self.error(
                    pos,
                    format!("ctx.{name} is a field, not a method: drop the ()"),
                );
            }
            None => {
                let names = METHODS.iter().map(|m| m.name);
                self.error(
                    pos,
                    format!("ctx has no method `{name}`{}", suggest(name, names)),
                );
            }
        }
        Ty::Other
    }
}
