

registered_capital