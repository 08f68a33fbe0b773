

enterprisestatus = active"city**registered_capitalBlicence check