//! Which topics/streams/subjects a stream sink wrote the verified tables
//! to: its name template rendered per table (`cdc.${db}.${table}` →
//! `cdc.shop.orders`), `${op}` expanded to every operation code.
//!
//! Pure; a template that depends on row values cannot be enumerated and is
//! refused with what to do instead.

use crate::model::TableLayout;

/// The operation codes `${op}` can render to.
const OPS: [&str; 5] = ["c", "u", "d", "r", "t"];

/// The names `template` renders to for `tables` of pipeline `pipeline`
/// (tenant `tenant`), sorted, without repeats.
pub fn render(template: &str, tables: &[TableLayout], pipeline: &str, tenant: &str) -> Result<Vec<String>, String> {
    if template.contains("${after.") || template.contains("${before.") {
        return Err(format!(
            "the name template {template:?} depends on row values (${{after.…}}/${{before.…}}), so the names \
             cannot be listed: verify a sink whose template uses only ${{db}}, ${{table}}, ${{op}}, ${{tenant}} \
             and ${{pipeline}}"
        ));
    }
    let mut out = Vec::new();
    for t in tables {
        let (db, table) = t.name.split_once('.').unwrap_or(("", t.name.as_str()));
        let base = template
            .replace("${db}", db)
            .replace("${table}", table)
            .replace("${tenant}", tenant)
            .replace("${pipeline}", pipeline);
        if base.contains("${op}") {
            out.extend(OPS.iter().map(|op| base.replace("${op}", op)));
        } else {
            out.push(base);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> TableLayout {
        TableLayout { name: name.into(), columns: vec!["id".into()], key: vec!["id".into()] }
    }

    #[test]
    fn renders_per_table_and_expands_op() {
        let tables = [t("shop.orders"), t("shop.items"), t("shop.orders")];
        assert_eq!(render("cdc.${db}.${table}", &tables, "p", "x").unwrap(), ["cdc.shop.items", "cdc.shop.orders"]);
        assert_eq!(render("${pipeline}-${op}", &tables[..1], "p", "x").unwrap().len(), 5);
        assert_eq!(render("all", &tables, "p", "x").unwrap(), ["all"]);
        assert!(render("c.${after.region}", &tables, "p", "x").unwrap_err().contains("row values"));
    }
}
