mod oracle_fixtures;
mod smoke;
