def test_orders():
    pass
