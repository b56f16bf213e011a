GREETING = "hello from working_dir"
