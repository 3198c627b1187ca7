"""Pure rendering of the objects the operator creates: the build Job and its buildctl arguments."""
