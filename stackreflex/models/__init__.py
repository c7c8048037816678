"""The SQL audit log: tables, migrations, the write API and the queries."""
