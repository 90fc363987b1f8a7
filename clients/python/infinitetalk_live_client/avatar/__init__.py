"""The avatar API's generated code, one subpackage per version (see v1)."""
