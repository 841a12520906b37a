//! Message templates (minijinja): the files under `templates/` are built into the binary, and a
//! directory named by `templates.dir` may override or add to them.
//!
//! A template is named `<family>/<name>.<locale>.<part>`, e.g. `email/secure_message.es.html`
//! or `urgent/sms.en.txt`. Rendering falls back to English when the locale has no version.
//! `.html` parts are auto-escaped.
//!
//! The lint ([`Templates::lint`]) renders every template against a sample context and refuses
//! PHI-free families (urgent notifications, "secure message waiting" email, reminders) that
//! reference message bodies, patient names, diagnoses or appointment reasons.

use std::collections::BTreeMap;
use std::path::Path;

use minijinja::Environment;
use serde::Serialize;

mod builtin {
    include!(concat!(env!("OUT_DIR"), "/templates.rs"));
}

/// Variables a PHI-free template must not use.
pub const PHI_VARIABLES: &[&str] = &[
    "body",
    "subject",
    "patient",
    "patient_name",
    "first_name",
    "last_name",
    "name",
    "birth_date",
    "diagnosis",
    "reason",
    "appointment_reason",
];

/// SMS templates must fit this many segments when rendered with the sample context.
pub const SMS_TEMPLATE_SEGMENTS: usize = 3;

/// Template families that must stay free of PHI.
const PHI_FREE: &[&str] = &[
    "urgent/",
    "reminder_reply/",
    "email/secure_message.",
    "reminder/",
    "recall/",
    "notice/",
    "sms_keywords/",
    "voice/",
];

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template {name}: {source}")]
    Syntax {
        name: String,
        source: minijinja::Error,
    },
    #[error("template {name}: {source}")]
    Render {
        name: String,
        source: minijinja::Error,
    },
    #[error("no template {0}")]
    Missing(String),
    #[error("template directory {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "template {name} uses {variable}, which may carry PHI; it belongs to a PHI-free family"
    )]
    Phi { name: String, variable: String },
    #[error(
        "template {name} renders to {segments} SMS segments with the sample; the limit is {limit}"
    )]
    TooLong {
        name: String,
        segments: usize,
        limit: usize,
    },
}

/// The loaded templates.
pub struct Templates {
    env: Environment<'static>,
    names: Vec<String>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("names", &self.names)
            .finish()
    }
}

impl Templates {
    /// The built-in templates only.
    pub fn builtin() -> Self {
        Self::load(None).expect("built-in templates compile (checked by tests)")
    }

    /// Built-in templates, then every file under `dir` (same names replace them).
    pub fn load(dir: Option<&Path>) -> Result<Self, TemplateError> {
        let mut sources: BTreeMap<String, String> = builtin::BUILTIN
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect();
        if let Some(dir) = dir {
            read_dir(dir, dir, &mut sources)?;
        }
        let mut env = Environment::new();
        for (name, source) in &sources {
            env.add_template_owned(name.clone(), source.clone())
                .map_err(|source| TemplateError::Syntax {
                    name: name.clone(),
                    source,
                })?;
        }
        Ok(Self {
            env,
            names: sources.into_keys().collect(),
        })
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether `<family>/<name>.<locale>.<part>` exists for this locale or English.
    pub fn has(&self, base: &str, part: &str) -> bool {
        self.names
            .iter()
            .any(|n| n.starts_with(&format!("{base}.")) && n.ends_with(&format!(".{part}")))
    }

    /// Renders `<base>.<locale>.<part>`, falling back to English.
    pub fn render<C: Serialize>(
        &self,
        base: &str,
        locale: &str,
        part: &str,
        context: &C,
    ) -> Result<String, TemplateError> {
        let wanted = format!("{base}.{}.{part}", locale_tag(locale));
        let fallback = format!("{base}.en.{part}");
        let name = if self.names.contains(&wanted) {
            wanted
        } else if self.names.contains(&fallback) {
            fallback
        } else {
            return Err(TemplateError::Missing(wanted));
        };
        let template = self
            .env
            .get_template(&name)
            .map_err(|source| TemplateError::Render {
                name: name.clone(),
                source,
            })?;
        let text = template
            .render(minijinja::value::Serde(context))
            .map_err(|source| TemplateError::Render {
                name: name.clone(),
                source,
            })?;
        Ok(text.trim_end().to_string())
    }

    /// Start-up check: every template renders against a sample context, and PHI-free families
    /// reference no PHI variable. Returns every problem found.
    pub fn lint(&self) -> Vec<TemplateError> {
        let mut problems = Vec::new();
        let sample = sample_context();
        for name in &self.names {
            let Ok(template) = self.env.get_template(name) else {
                continue;
            };
            if PHI_FREE.iter().any(|family| name.starts_with(family)) {
                let used = template.undeclared_variables(false);
                for variable in PHI_VARIABLES {
                    if used.contains(*variable) {
                        problems.push(TemplateError::Phi {
                            name: name.clone(),
                            variable: variable.to_string(),
                        });
                    }
                }
            }
            match template.render(sample.clone()) {
                Err(source) => problems.push(TemplateError::Render {
                    name: name.clone(),
                    source,
                }),
                Ok(text)
                    if name.contains("/sms.")
                        || name.starts_with("sms_keywords/")
                        || name.starts_with("reminder_reply/") =>
                {
                    let segments = crate::phone::segments(text.trim()).segments;
                    if segments > SMS_TEMPLATE_SEGMENTS {
                        problems.push(TemplateError::TooLong {
                            name: name.clone(),
                            segments,
                            limit: SMS_TEMPLATE_SEGMENTS,
                        });
                    }
                }
                Ok(_) => {}
            }
        }
        problems
    }
}

/// `es-MX` → `es`; empty → `en`.
pub fn locale_tag(locale: &str) -> String {
    let tag = locale
        .split(['-', '_'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if tag.is_empty() { "en".into() } else { tag }
}

/// The context the lint renders with: every variable any shipped template uses.
pub fn sample_context() -> minijinja::Value {
    minijinja::context! {
        organization => "Riverside Family Clinic",
        portal_url => "https://portal.example.org",
        count => 1,
        subject => "Sample subject",
        body => "Sample body",
        date => "Tuesday, March 3",
        time => "9:30 AM",
        location => "Riverside Family Clinic, 1200 Main Street, Suite 300",
        provider => "Dr. Rivera",
        phone => "+1 555 010 0000",
        confirm => "C",
        decline => "N",
        reason => "Sample reason",
        replies => true,
    }
}

fn read_dir(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, String>,
) -> Result<(), TemplateError> {
    let io = |source| TemplateError::Io {
        path: dir.display().to_string(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            read_dir(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            let text = std::fs::read_to_string(&path).map_err(|source| TemplateError::Io {
                path: path.display().to_string(),
                source,
            })?;
            out.insert(rel.to_string_lossy().replace('\\', "/"), text);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_templates_pass_the_lint() {
        let templates = Templates::builtin();
        let problems = templates.lint();
        assert!(problems.is_empty(), "{problems:?}");
        assert!(templates.has("email/secure_message", "html"));
    }

    #[test]
    fn falls_back_to_english_and_escapes_html() {
        let templates = Templates::builtin();
        let ctx =
            minijinja::context! { organization => "A & B <Clinic>", portal_url => "https://p" };
        let text = templates
            .render("email/secure_message", "fr-CA", "txt", &ctx)
            .unwrap();
        assert!(text.contains("A & B <Clinic>"));
        let html = templates
            .render("email/secure_message", "es", "html", &ctx)
            .unwrap();
        assert!(html.contains("A &amp; B &lt;Clinic&gt;"));
        assert!(html.contains("Tiene un nuevo mensaje"));
    }

    #[test]
    fn lint_refuses_phi_in_a_notification_template() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("urgent")).unwrap();
        std::fs::write(
            dir.path().join("urgent/sms.en.txt"),
            "Hi {{ patient_name }}: {{ body }}",
        )
        .unwrap();
        let templates = Templates::load(Some(dir.path())).unwrap();
        let problems: Vec<String> = templates.lint().iter().map(|p| p.to_string()).collect();
        assert!(
            problems.iter().any(|p| p.contains("patient_name")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("uses body")),
            "{problems:?}"
        );
    }
}
