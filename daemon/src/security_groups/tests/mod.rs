mod decide;
mod mark_names;
mod support;
