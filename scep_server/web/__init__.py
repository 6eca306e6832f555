"""HTTP surface: the Flask app factory and one blueprint per surface."""
