function polyplug_init( -- SYNTAX ERROR: unclosed paren
