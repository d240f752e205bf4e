"""The student view: a roster student with the programs they hold (above roster and programs)."""
