"""The Firestore mirror domain: the admin app's read model kept in step with PostgreSQL."""
