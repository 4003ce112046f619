mod smoke;
mod tp;
