DROP TABLE cleanup_lease;
