//! Turning a JavaScript or TypeScript cell into a script the Node runner can run in its
//! persistent `vm` context.
//!
//! TypeScript is transpiled here, in the agent, with the `oxc` crates (parse → strip types /
//! lower enums and namespaces → print), so a TypeScript context needs only `node` in the image.
//! Both languages then go through [`prepare_js`], which makes a cell behave like a notebook cell:
//! top-level `await` works, top-level `let`/`const`/`class`/`function`/`import` bindings persist
//! into the next cell and can be declared again, and the value of the last expression statement
//! is the cell's result. Node has no public JavaScript parser, so this is done here as well.

use std::path::Path;

use oxc::allocator::Allocator;
use oxc::ast::ast::{
    BindingPattern, Declaration, ImportDeclarationSpecifier, ModuleExportName, Statement,
    VariableDeclarationKind,
};
use oxc::codegen::Codegen;
use oxc::diagnostics::OxcDiagnostic;
use oxc::parser::Parser;
use oxc::semantic::SemanticBuilder;
use oxc::span::{GetSpan, SourceType, Span};
use oxc::transformer::{TransformOptions, Transformer};

/// A cell ready for the runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// Script text for `vm.Script`.
    pub code: String,
    /// Whether the code is wrapped in an async function whose promise resolves to the cell's
    /// result (otherwise the script's completion value is the result).
    pub wrapped: bool,
}

/// A cell that does not parse as TypeScript.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    pub message: String,
    /// Human-readable report with line and column, like a traceback.
    pub report: String,
}

fn report(src: &str, filename: &str, diags: &[OxcDiagnostic]) -> SyntaxError {
    let mut lines = Vec::new();
    for d in diags {
        let at = d.labels.first().map(|l| l.offset() as usize).unwrap_or(0);
        let before = &src[..at.min(src.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        let text = src.lines().nth(line - 1).unwrap_or("");
        lines.push(format!(
            "  File \"{filename}\", line {line}, column {col}\n    {text}\n    {caret:>col$}\nSyntaxError: {msg}",
            caret = "^",
            msg = d.message
        ));
    }
    SyntaxError {
        message: diags
            .first()
            .map(|d| d.message.to_string())
            .unwrap_or_else(|| "invalid syntax".into()),
        report: lines.join("\n") + "\n",
    }
}

/// Strips the types from a TypeScript cell (and lowers enums and namespaces).
pub fn typescript_to_js(src: &str, filename: &str) -> Result<String, SyntaxError> {
    // A transformer bug must not take the agent (or the run) down with it.
    std::panic::catch_unwind(|| transpile_ts(src, filename)).unwrap_or_else(|_| {
        Err(SyntaxError {
            message: "the TypeScript transpiler failed on this cell".into(),
            report: "TranspileError: the TypeScript transpiler failed on this cell\n".into(),
        })
    })
}

fn transpile_ts(src: &str, filename: &str) -> Result<String, SyntaxError> {
    let allocator = Allocator::default();
    let parsed = Parser::new(&allocator, src, SourceType::ts()).parse();
    if parsed.panicked || parsed.diagnostics.has_errors() {
        let errs: Vec<_> = parsed.diagnostics.errors().cloned().collect();
        return Err(report(src, filename, &errs));
    }
    let mut program = parsed.program;
    let scoping = SemanticBuilder::new()
        .with_enum_eval(true)
        .build(&program)
        .semantic
        .into_scoping();
    let mut options = TransformOptions::default();
    // A cell's imports are used by later cells: keep every value import, drop only
    // `import type`.
    options.typescript.only_remove_type_imports = true;
    let out = Transformer::new(&allocator, Path::new(filename), &options)
        .build_with_scoping(scoping, &mut program);
    if out.diagnostics.has_errors() {
        let errs: Vec<_> = out.diagnostics.errors().cloned().collect();
        return Err(report(src, filename, &errs));
    }
    Ok(Codegen::new().build(&program).code)
}

fn text(src: &str, span: Span) -> &str {
    &src[span.start as usize..span.end as usize]
}

fn bound_names(p: &BindingPattern<'_>) -> Vec<String> {
    p.get_binding_identifiers()
        .into_iter()
        .map(|b| b.name.to_string())
        .collect()
}

struct Rewrite<'s> {
    src: &'s str,
    hoisted: Vec<String>,
    prelude: Vec<String>,
    edits: Vec<(u32, u32, String)>,
}

impl Rewrite<'_> {
    fn hoist(&mut self, names: impl IntoIterator<Item = String>) {
        for n in names {
            if !self.hoisted.contains(&n) {
                self.hoisted.push(n);
            }
        }
    }

    fn assignments(&mut self, span: Span, parts: Vec<String>) {
        let replacement = if parts.is_empty() {
            ";".to_string()
        } else {
            format!("void ({});", parts.join(", "))
        };
        self.edits.push((span.start, span.end, replacement));
    }

    /// Rewrites one top-level declaration; `span` is the whole statement's (which includes an
    /// `export` keyword, if any).
    fn declaration(&mut self, span: Span, decl: &Declaration<'_>) {
        let src = self.src;
        match decl {
            Declaration::VariableDeclaration(d)
                if matches!(
                    d.kind,
                    VariableDeclarationKind::Var
                        | VariableDeclarationKind::Let
                        | VariableDeclarationKind::Const
                ) =>
            {
                let mut parts = Vec::new();
                for v in &d.declarations {
                    self.hoist(bound_names(&v.id));
                    match &v.init {
                        Some(init) => parts.push(format!(
                            "{} = {}",
                            text(src, v.id.span()),
                            text(src, init.span())
                        )),
                        // `var x;` keeps an existing value; `let x;` is undefined.
                        None if d.kind != VariableDeclarationKind::Var => {
                            for n in bound_names(&v.id) {
                                parts.push(format!("{n} = undefined"));
                            }
                        }
                        None => {}
                    }
                }
                self.assignments(span, parts);
            }
            Declaration::FunctionDeclaration(f) => {
                if let Some(id) = &f.id {
                    let name = id.name.to_string();
                    // Function declarations are hoisted: assign them before the cell's code.
                    self.prelude
                        .push(format!("{name} = {};", text(src, f.span)));
                    self.hoist([name]);
                    self.edits.push((span.start, span.end, String::new()));
                }
            }
            Declaration::ClassDeclaration(c) => {
                if let Some(id) = &c.id {
                    let name = id.name.to_string();
                    self.edits.push((
                        span.start,
                        span.end,
                        format!("{name} = {};", text(src, c.span)),
                    ));
                    self.hoist([name]);
                }
            }
            _ => {}
        }
    }
}

/// Prepares a JavaScript cell (see the module docs). Code that does not parse as a module
/// (sloppy-mode-only syntax, or a syntax error) is passed through untouched, so that V8 runs it
/// as a plain script or reports its own syntax error.
pub fn prepare_js(src: &str) -> Cell {
    let allocator = Allocator::default();
    let parsed = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Parser::new(&allocator, src, SourceType::mjs()).parse()
    })) {
        Ok(p) => p,
        Err(_) => {
            return Cell {
                code: src.to_string(),
                wrapped: false,
            }
        }
    };
    if parsed.panicked || parsed.diagnostics.has_errors() {
        return Cell {
            code: src.to_string(),
            wrapped: false,
        };
    }
    let program = parsed.program;
    let mut rw = Rewrite {
        src,
        hoisted: Vec::new(),
        prelude: Vec::new(),
        edits: Vec::new(),
    };
    if let Some(h) = &program.hashbang {
        rw.edits.push((h.span.start, h.span.end, String::new()));
    }
    let last = program.body.len().saturating_sub(1);
    for (i, stmt) in program.body.iter().enumerate() {
        match stmt {
            Statement::ExpressionStatement(e) if i == last => {
                rw.edits.push((
                    e.span.start,
                    e.span.end,
                    format!("return ({});", text(src, e.expression.span())),
                ));
            }
            Statement::ImportDeclaration(imp) => {
                let from = text(src, imp.source.span);
                let mut parts = Vec::new();
                match &imp.specifiers {
                    None => parts.push(format!("require({from})")),
                    Some(specs) => {
                        for s in specs {
                            let (local, value) = match s {
                                ImportDeclarationSpecifier::ImportDefaultSpecifier(d) => (
                                    d.local.name.to_string(),
                                    format!(
                                        "((m) => (m && m.__esModule ? m.default : m))(require({from}))"
                                    ),
                                ),
                                ImportDeclarationSpecifier::ImportNamespaceSpecifier(n) => {
                                    (n.local.name.to_string(), format!("require({from})"))
                                }
                                ImportDeclarationSpecifier::ImportSpecifier(s) => {
                                    let key = match &s.imported {
                                        ModuleExportName::StringLiteral(l) => {
                                            text(src, l.span).to_string()
                                        }
                                        other => format!("{:?}", other.name().to_string()),
                                    };
                                    (s.local.name.to_string(), format!("require({from})[{key}]"))
                                }
                            };
                            parts.push(format!("{local} = {value}"));
                            rw.hoist([local]);
                        }
                    }
                }
                rw.assignments(imp.span, parts);
            }
            other => {
                if let Some(decl) = other.as_declaration() {
                    rw.declaration(other.span(), decl);
                }
            }
        }
    }
    rw.edits.sort_by_key(|e| e.0);
    let mut body = String::with_capacity(src.len() + 64);
    let mut pos = 0usize;
    for (start, end, rep) in &rw.edits {
        body.push_str(&src[pos..*start as usize]);
        body.push_str(rep);
        pos = *end as usize;
    }
    body.push_str(&src[pos..]);
    let mut code = String::with_capacity(body.len() + 128);
    if !rw.hoisted.is_empty() {
        code.push_str(&format!("var {};\n", rw.hoisted.join(", ")));
    }
    code.push_str("(async () => {");
    for p in &rw.prelude {
        code.push_str(p);
        code.push('\n');
    }
    code.push('\n');
    code.push_str(&body);
    code.push_str("\n})()");
    Cell {
        code,
        wrapped: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_become_assignments_to_hoisted_vars() {
        let c = prepare_js("let a = 1, {b, c: [d]} = o;\nconst e = await f(a);\na + e");
        assert!(c.wrapped);
        assert!(c.code.starts_with("var a, b, d, e;\n"), "{}", c.code);
        assert!(
            c.code.contains("void (a = 1, {b, c: [d]} = o);"),
            "{}",
            c.code
        );
        assert!(c.code.contains("void (e = await f(a));"), "{}", c.code);
        assert!(c.code.contains("return (a + e);"), "{}", c.code);
    }

    #[test]
    fn functions_are_hoisted_and_classes_assigned() {
        let c = prepare_js("g();\nfunction g() { return 1 }\nclass K {}\n");
        assert!(
            c.code.contains("g = function g() { return 1 };"),
            "{}",
            c.code
        );
        assert!(c.code.contains("K = class K {};"), "{}", c.code);
        let g_at = c.code.find("g = function").unwrap();
        let call_at = c.code.find("g();").unwrap();
        assert!(g_at < call_at, "{}", c.code);
    }

    #[test]
    fn imports_become_requires() {
        let c = prepare_js(
            "import fs from 'fs';\nimport * as p from \"path\";\nimport {a, b as z} from 'm';",
        );
        assert!(c.code.contains("var fs, p, a, z;"), "{}", c.code);
        assert!(c.code.contains("p = require(\"path\")"), "{}", c.code);
        assert!(c.code.contains("z = require('m')[\"b\"]"), "{}", c.code);
    }

    #[test]
    fn unparseable_code_passes_through() {
        let c = prepare_js("f(1 +");
        assert!(!c.wrapped);
        assert_eq!(c.code, "f(1 +");
    }

    #[test]
    fn typescript_loses_its_types_and_keeps_value_imports() {
        let js = typescript_to_js(
            "import fs from 'fs';\ninterface P { x: number }\nfunction id<T>(a: T): T { return a }\nconst p: P = { x: 1 };\nid<number>(p.x) as number",
            "cell.ts",
        )
        .unwrap();
        assert!(!js.contains("interface"), "{js}");
        assert!(!js.contains(": number"), "{js}");
        assert!(js.contains("import fs from"), "{js}");
        let err = typescript_to_js("let x: = 1", "cell.ts").unwrap_err();
        assert!(err.report.contains("line 1"), "{}", err.report);
    }
}
