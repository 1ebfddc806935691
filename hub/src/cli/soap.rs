//! `raccordo soap …`: tools for engineers connecting SOAP back offices.

use raccordo_adapters::soap::wsdl;

/// `raccordo soap inspect`: lists what a WSDL offers and, for one
/// operation, prints a starting Body template and configuration lines.
pub async fn inspect(source: &str, operation: Option<&str>) -> anyhow::Result<()> {
    let text = wsdl::load(source).await.map_err(anyhow::Error::msg)?;
    let parsed = wsdl::parse(&text).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
    match operation {
        None => {
            print!("{}", parsed.listing());
            if parsed.services.is_empty() {
                println!("(no services declared)");
            }
        }
        Some(op) => print!(
            "{}",
            parsed
                .request_template(op)
                .map_err(|e| anyhow::anyhow!("{source}: {e}"))?
        ),
    }
    Ok(())
}
