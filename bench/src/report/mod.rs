//! `report`: JSON results rendered into one self-contained HTML page with inline SVG plots.

pub mod html;
pub mod load;
pub mod svg;

pub use html::render_page;
pub use load::load_results;
