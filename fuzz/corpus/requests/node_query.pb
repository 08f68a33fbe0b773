

enterprise

city
320100
registered_capital
credit_code"name(d