"""The pure core: values, rules and decisions. Standard library only, no I/O, no clock."""
